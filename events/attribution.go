package events

import (
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// Attribution says who ends flows, over a sliding window of DESTROY
// events: the original-direction sources of every flow that ended (who
// churns connections), and the original-direction destination address and
// port of every flow that reached ESTABLISHED and ended still ESTABLISHED,
// with no FIN or RST seen (whose connections die silently). Memory is
// bounded by the window's capacity, whatever the number of distinct flows.
type Attribution struct {
	ends, silent *topk.Window
}

// NewAttribution returns an Attribution over windows configured by opts;
// the error wraps topk.ErrOptions.
func NewAttribution(opts topk.WindowOptions) (*Attribution, error) {
	ends, err := topk.NewWindow(opts)
	if err != nil {
		return nil, err
	}
	silent, err := topk.NewWindow(opts)
	if err != nil {
		return nil, err
	}
	return &Attribution{ends: ends, silent: silent}, nil
}

// now reads the windows' clock.
func (a *Attribution) now() time.Time { return a.ends.Now() }

// pendingKeys holds the keys of the DESTROY events of one receive batch
// until they are counted together (Attribution.flush): each window is
// then locked once per batch, not once per event. It belongs to the
// receive loop.
type pendingKeys struct {
	ends, silent []topk.Key
}

// maxPendingKeys is how many keys of each window pendingKeys holds before
// they are counted: one per datagram of a receive batch (an event datagram
// holds one message).
const maxPendingKeys = recvSlots

// collect adds the keys of one DESTROY event to p and reports whether p is
// full and must be flushed before the next. It allocates its two slices
// on its first call only.
func (p *pendingKeys) collect(f *ctnl.Flow) (full bool) {
	if p.ends == nil {
		p.ends = make([]topk.Key, 0, maxPendingKeys)
		p.silent = make([]topk.Key, 0, maxPendingKeys)
	}
	if f.Has(ctnl.HasAddrs) {
		p.ends = append(p.ends, topk.AddrKey(f.Src))
	}
	if f.SilentEnd() {
		p.silent = append(p.silent, topk.AddrPortKey(f.Dst, f.DstPort))
	}
	return len(p.ends) == cap(p.ends) || len(p.silent) == cap(p.silent)
}

// flush counts the keys of p at now and empties p; a zero now reads the
// clock. Reading the clock costs more than counting a key, so the receive
// loop reads it once per batch and hands it in.
func (a *Attribution) flush(p *pendingKeys, now time.Time) {
	if len(p.ends) == 0 && len(p.silent) == 0 {
		return
	}
	if now.IsZero() {
		now = a.now()
	}
	a.ends.AddAllAt(p.ends, now)
	a.silent.AddAllAt(p.silent, now)
	p.ends, p.silent = p.ends[:0], p.silent[:0]
}

// Top returns the k sources that ended the most flows in the window, and
// the k destinations (address and port) with the most silent ends, each
// with the remainder and total of the window.
func (a *Attribution) Top(k int) (ends, silent topk.WindowTop) {
	return a.ends.Top(k), a.silent.Top(k)
}
