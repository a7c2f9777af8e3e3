package tablescan

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
)

// MaxHelpers is the most helper names a scan reports by name; entries of
// further helpers are counted under OtherHelper. The kernel has a small
// fixed set of helpers (ftp, sip, h323, irc, tftp, ...), so this bound is
// reached only by unusual kernels.
const MaxHelpers = 16

// OtherHelper is the helper label value of the entries whose helper is
// not among the first MaxHelpers names seen.
const OtherHelper = "other"

// helperCounts counts entries per helper name in fixed memory.
type helperCounts struct {
	n     int
	names [MaxHelpers][ctnl.HelperNameLen]byte
	lens  [MaxHelpers]uint8
	count [MaxHelpers]uint64
	other uint64
}

func (h *helperCounts) reset() { *h = helperCounts{} }

// add counts one entry with the helper name.
func (h *helperCounts) add(name []byte) {
	for i := range h.n {
		if bytes.Equal(h.names[i][:h.lens[i]], name) {
			h.count[i]++
			return
		}
	}
	if h.n == MaxHelpers || len(name) > ctnl.HelperNameLen {
		h.other++
		return
	}
	h.lens[h.n] = uint8(copy(h.names[h.n][:], name))
	h.count[h.n] = 1
	h.n++
}

// result returns the counts by name, then other when any.
func (h *helperCounts) result() []HelperCount {
	var out []HelperCount
	for i := range h.n {
		out = append(out, HelperCount{Helper: string(h.names[i][:h.lens[i]]), Entries: h.count[i]})
	}
	slices.SortFunc(out, func(a, b HelperCount) int { return cmp.Compare(a.Helper, b.Helper) })
	if h.other > 0 {
		out = append(out, HelperCount{Helper: OtherHelper, Entries: h.other})
	}
	return out
}
