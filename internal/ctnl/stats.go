package ctnl

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
)

// ErrMalformed reports a message that does not decode as ctnetlink.
var ErrMalformed = errors.New("malformed ctnetlink message")

// Counter is one per-CPU conntrack statistic.
type Counter int

// The per-CPU counters exported by the kernel, in the order the exporter
// reports them. The deprecated searched, new, delete and delete_list
// attributes, and ignore (always zero), are not decoded.
const (
	Found Counter = iota
	Invalid
	Insert
	InsertFailed
	Drop
	EarlyDrop
	Error
	SearchRestart
	ClashResolve
	ChainTooLong
	// NumCounters is the number of counters, not a counter.
	NumCounters
)

var counterNames = [NumCounters]string{
	Found:         "found",
	Invalid:       "invalid",
	Insert:        "insert",
	InsertFailed:  "insert_failed",
	Drop:          "drop",
	EarlyDrop:     "early_drop",
	Error:         "error",
	SearchRestart: "search_restart",
	ClashResolve:  "clash_resolve",
	ChainTooLong:  "chaintoolong",
}

// String returns the counter's name as the kernel's conntrack -S prints it.
func (c Counter) String() string {
	if c < 0 || c >= NumCounters {
		return fmt.Sprintf("counter(%d)", int(c))
	}
	return counterNames[c]
}

// Netlink message types and attribute numbers from
// include/uapi/linux/netfilter/nfnetlink_conntrack.h.
const (
	subsysCTNetlink  = 1 // NFNL_SUBSYS_CTNETLINK
	msgGetStatsCPU   = 4 // IPCTNL_MSG_CT_GET_STATS_CPU
	msgGetStats      = 5 // IPCTNL_MSG_CT_GET_STATS
	nfgenmsgLen      = 4
	attrStatsGlobalE = 1 // CTA_STATS_GLOBAL_ENTRIES
	attrStatsGlobalM = 2 // CTA_STATS_GLOBAL_MAX_ENTRIES
)

// cpuAttrCounter returns the counter of a CTA_STATS_* attribute number.
func cpuAttrCounter(attr uint16) (Counter, bool) {
	switch attr {
	case 2: // CTA_STATS_FOUND
		return Found, true
	case 4: // CTA_STATS_INVALID
		return Invalid, true
	case 8: // CTA_STATS_INSERT
		return Insert, true
	case 9: // CTA_STATS_INSERT_FAILED
		return InsertFailed, true
	case 10: // CTA_STATS_DROP
		return Drop, true
	case 11: // CTA_STATS_EARLY_DROP
		return EarlyDrop, true
	case 12: // CTA_STATS_ERROR
		return Error, true
	case 13: // CTA_STATS_SEARCH_RESTART
		return SearchRestart, true
	case 14: // CTA_STATS_CLASH_RESOLVE
		return ClashResolve, true
	case 15: // CTA_STATS_CHAIN_TOOLONG
		return ChainTooLong, true
	}
	return 0, false
}

// CPUStats are the raw 32-bit counters of one CPU.
type CPUStats struct {
	CPU      uint16
	Counters [NumCounters]uint32
}

// GlobalStats are the namespace's entry count and the table limit.
type GlobalStats struct {
	// Entries is the number of entries in the namespace's table.
	Entries uint32
	// MaxEntries is nf_conntrack_max (global, shared by all namespaces).
	MaxEntries uint32
}

// msgType returns the netlink header type of a ctnetlink message.
func msgType(msg uint16) netlink.HeaderType {
	return netlink.HeaderType(subsysCTNetlink<<8 | msg)
}

// nfgenmsgRequest is the nfgenmsg header of a request: AF_UNSPEC,
// NFNETLINK_V0, res_id 0.
func nfgenmsgRequest() []byte { return make([]byte, nfgenmsgLen) }

// DecodeCPUStats decodes one IPCTNL_MSG_CT_GET_STATS_CPU reply body
// (nfgenmsg header included), without allocating. The CPU number is the
// header's res_id.
func DecodeCPUStats(b []byte) (CPUStats, error) {
	var s CPUStats
	if len(b) < nfgenmsgLen {
		return s, fmt.Errorf("cpu stats: %d-byte body: %w", len(b), ErrMalformed)
	}
	s.CPU = binary.BigEndian.Uint16(b[2:4])
	it := attrIter{rest: b[nfgenmsgLen:]}
	for it.next() {
		c, ok := cpuAttrCounter(it.typ)
		if !ok {
			continue
		}
		if len(it.data) != 4 {
			return s, fmt.Errorf("cpu stats: attribute %d is %d bytes: %w", it.typ, len(it.data), ErrMalformed)
		}
		s.Counters[c] = binary.BigEndian.Uint32(it.data)
	}
	if it.bad {
		return s, fmt.Errorf("cpu stats: attribute framing: %w", ErrMalformed)
	}
	return s, nil
}

// DecodeGlobalStats decodes an IPCTNL_MSG_CT_GET_STATS reply body,
// without allocating.
func DecodeGlobalStats(b []byte) (GlobalStats, error) {
	var g GlobalStats
	if len(b) < nfgenmsgLen {
		return g, fmt.Errorf("global stats: %d-byte body: %w", len(b), ErrMalformed)
	}
	it := attrIter{rest: b[nfgenmsgLen:]}
	var haveEntries, haveMax bool
	for it.next() {
		switch it.typ {
		case attrStatsGlobalE, attrStatsGlobalM:
			if len(it.data) != 4 {
				return g, fmt.Errorf("global stats: attribute %d is %d bytes: %w", it.typ, len(it.data), ErrMalformed)
			}
			if it.typ == attrStatsGlobalE {
				g.Entries, haveEntries = binary.BigEndian.Uint32(it.data), true
			} else {
				g.MaxEntries, haveMax = binary.BigEndian.Uint32(it.data), true
			}
		}
	}
	if it.bad {
		return g, fmt.Errorf("global stats: attribute framing: %w", ErrMalformed)
	}
	if !haveEntries || !haveMax {
		return g, fmt.Errorf("global stats: entries or max entries missing: %w", ErrMalformed)
	}
	return g, nil
}
