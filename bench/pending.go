package bench

import (
	"context"
	"errors"
	"time"
)

// errPending reports a drill whose exporter feature has not landed yet.
var errPending = errors.New("not implemented yet")

// Burst creates entries over ctnetlink and flushes them.
type Burst struct{}

// Name implements Drill.
func (Burst) Name() string { return "burst" }

// Summary implements Drill.
func (Burst) Summary() string {
	return "create --size entries over ctnetlink, then flush them; exporter vs conntrack -E"
}

// Defaults implements Drill.
func (Burst) Defaults() Params { return Params{Size: 200000} }

// Smoke implements Drill.
func (Burst) Smoke() Params { return Params{Size: 2000} }

// Plot implements Drill.
func (Burst) Plot() PlotSpec { return PlotSpec{X: "size", XLabel: "entries"} }

// Run implements Drill.
func (Burst) Run(context.Context, *Env, Params) (*Result, error) { return nil, errPending }

// IdleExpiry lets idle flows expire.
type IdleExpiry struct{}

// Name implements Drill.
func (IdleExpiry) Name() string { return "idle-expiry" }

// Summary implements Drill.
func (IdleExpiry) Summary() string { return "idle" }

// Defaults implements Drill.
func (IdleExpiry) Defaults() Params { return Params{Size: 100, Timeout: Duration(3 * time.Second)} }

// Smoke implements Drill.
func (IdleExpiry) Smoke() Params { return Params{Size: 10, Timeout: Duration(2 * time.Second)} }

// Plot implements Drill.
func (IdleExpiry) Plot() PlotSpec { return PlotSpec{X: "size", XLabel: "flows"} }

// Run implements Drill.
func (IdleExpiry) Run(context.Context, *Env, Params) (*Result, error) { return nil, errPending }
