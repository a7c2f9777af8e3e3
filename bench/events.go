package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// eventCounters are the exporter's event metrics of one namespace at one
// scrape.
type eventCounters struct {
	destroy, lost, lifetimes, withoutTimestamp float64
}

// sub returns the growth from an earlier reading.
func (c eventCounters) sub(earlier eventCounters) eventCounters {
	return eventCounters{
		destroy:          c.destroy - earlier.destroy,
		lost:             c.lost - earlier.lost,
		lifetimes:        c.lifetimes - earlier.lifetimes,
		withoutTimestamp: c.withoutTimestamp - earlier.withoutTimestamp,
	}
}

// sumOrZero is Metrics.Sum with a missing series read as 0; a missing
// family is still an error.
func sumOrZero(m lab.Metrics, name string, want map[string]string) (float64, error) {
	if _, ok := m[name]; !ok {
		return 0, fmt.Errorf("ct-exporter exports no %s: %w", name, lab.ErrNoSeries)
	}
	v, err := m.Sum(name, want)
	if errors.Is(err, lab.ErrNoSeries) {
		return 0, nil
	}
	return v, err
}

// readEventCounters reads the events collector's metrics of a namespace.
func readEventCounters(m lab.Metrics, netnsName string) (eventCounters, error) {
	var c eventCounters
	var err error
	sel := map[string]string{"netns": netnsName}
	if c.destroy, err = sumOrZero(m, "conntrack_events_total", map[string]string{"netns": netnsName, "type": "destroy"}); err != nil {
		return c, err
	}
	if c.lost, err = sumOrZero(m, "conntrack_exporter_events_lost_total", sel); err != nil {
		return c, err
	}
	if c.withoutTimestamp, err = sumOrZero(m, "conntrack_exporter_flows_without_timestamp_total", sel); err != nil {
		return c, err
	}
	if _, ok := m["conntrack_flow_lifetime_seconds"]; ok {
		n, _, err := m.Histogram("conntrack_flow_lifetime_seconds", sel)
		if err != nil && !errors.Is(err, lab.ErrNoSeries) {
			return c, err
		}
		c.lifetimes = float64(n)
	}
	return c, nil
}

// waitEvents scrapes until the exporter has received or lost want DESTROY
// events more than base, or timeout passed; it returns the last reading.
func waitEvents(ctx context.Context, exp *Exporter, netnsName string, base eventCounters, want float64, timeout time.Duration) (eventCounters, lab.Metrics, error) {
	end := time.Now().Add(timeout)
	for {
		m, _, err := exp.Scrape(ctx)
		if err != nil {
			return eventCounters{}, nil, err
		}
		c, err := readEventCounters(m, netnsName)
		if err != nil {
			return eventCounters{}, nil, err
		}
		d := c.sub(base)
		if d.destroy+d.lost >= want || time.Now().After(end) {
			return c, m, nil
		}
		select {
		case <-ctx.Done():
			return eventCounters{}, nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitSubscribed waits until a socket of the namespace listens to
// DESTROY events: the exporter's subscriber, started before any other
// listener.
func waitSubscribed(ctx context.Context, ns *lab.Namespace, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		socks, err := conntrackListeners(ns)
		if err != nil {
			return err
		}
		if len(socks) > 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("no DESTROY listener in %s after %s: is the exporter's events collector on?", ns.Name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startWatched creates a tracking namespace with kernel timestamps on,
// starts the exporter watching it and waits for its event subscriber,
// then starts conntrack -E -e DESTROY beside it.
func startWatched(ctx context.Context, env *Env, ns *lab.Namespace, onLine func([]byte), anchorArgs ...string) (*Exporter, *EventAnchor, error) {
	// Timestamps before the exporter starts, so that its subscriber is
	// in the timestamp lifetime mode from the first event.
	if err := ns.SetSysctl("net.netfilter.nf_conntrack_timestamp", "1"); err != nil {
		return nil, nil, err
	}
	exp, err := StartExporter(ctx, env.Lab, env.Exporter, []string{ns.Path}, env.ExporterArgs...)
	if err != nil {
		return nil, nil, err
	}
	if err := waitSubscribed(ctx, ns, 10*time.Second); err != nil {
		exp.Stop()
		return nil, nil, err
	}
	anchor, err := StartEventAnchor(env.Lab, ns, onLine, append([]string{"-e", "DESTROY"}, anchorArgs...)...)
	if err != nil {
		exp.Stop()
		return nil, nil, err
	}
	return exp, anchor, nil
}

// eventRows compares what the exporter and conntrack -E received of n
// DESTROY events.
func eventRows(d eventCounters, ev EventCounts, n float64) []Row {
	return []Row{
		NewRow("DESTROY events received", "events", d.destroy, AnchorEvents, float64(ev.Destroy)),
		NewRow("DESTROY events received, share", "%", 100*d.destroy/n, AnchorEvents, 100*float64(ev.Destroy)/n),
		NewRow("DESTROY events lost (counted)", "events", d.lost, AnchorEvents+" socket drops", float64(ev.Drops)),
		NewRow("received + lost", "events", d.destroy+d.lost, AnchorEvents, float64(ev.Destroy+ev.Drops)),
		ExporterRow("flow lifetimes observed", "observations", d.lifetimes),
	}
}
