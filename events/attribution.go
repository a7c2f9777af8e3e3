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

// observe counts one DESTROY event received at now; a zero now reads the
// clock. It allocates nothing. Reading the clock costs more than the rest
// of the attribution, so the receive loop reads it once per batch of
// datagrams and hands it in.
func (a *Attribution) observe(f *ctnl.Flow, now time.Time) {
	addrs, silent := f.Has(ctnl.HasAddrs), f.SilentEnd()
	if !addrs && !silent {
		return
	}
	if now.IsZero() {
		now = a.now()
	}
	if addrs {
		a.ends.AddAt(topk.AddrKey(f.Src), now)
	}
	if silent {
		a.silent.AddAt(topk.AddrPortKey(f.Dst, f.DstPort), now)
	}
}

// Top returns the k sources that ended the most flows in the window, and
// the k destinations (address and port) with the most silent ends, each
// with the remainder and total of the window.
func (a *Attribution) Top(k int) (ends, silent topk.WindowTop) {
	return a.ends.Top(k), a.silent.Top(k)
}
