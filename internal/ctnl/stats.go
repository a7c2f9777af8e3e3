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

// cpuAttrCounter maps CTA_STATS_* attribute numbers to counters.
var cpuAttrCounter = map[uint16]Counter{
	2:  Found,         // CTA_STATS_FOUND
	4:  Invalid,       // CTA_STATS_INVALID
	8:  Insert,        // CTA_STATS_INSERT
	9:  InsertFailed,  // CTA_STATS_INSERT_FAILED
	10: Drop,          // CTA_STATS_DROP
	11: EarlyDrop,     // CTA_STATS_EARLY_DROP
	12: Error,         // CTA_STATS_ERROR
	13: SearchRestart, // CTA_STATS_SEARCH_RESTART
	14: ClashResolve,  // CTA_STATS_CLASH_RESOLVE
	15: ChainTooLong,  // CTA_STATS_CHAIN_TOOLONG
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
// (nfgenmsg header included). The CPU number is the header's res_id.
func DecodeCPUStats(b []byte) (CPUStats, error) {
	var s CPUStats
	if len(b) < nfgenmsgLen {
		return s, fmt.Errorf("cpu stats: %d-byte body: %w", len(b), ErrMalformed)
	}
	s.CPU = binary.BigEndian.Uint16(b[2:4])
	ad, err := netlink.NewAttributeDecoder(b[nfgenmsgLen:])
	if err != nil {
		return s, fmt.Errorf("cpu stats: %v: %w", err, ErrMalformed)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		c, ok := cpuAttrCounter[ad.Type()]
		if !ok {
			continue
		}
		if len(ad.Bytes()) != 4 {
			return s, fmt.Errorf("cpu stats: attribute %d is %d bytes: %w", ad.Type(), len(ad.Bytes()), ErrMalformed)
		}
		s.Counters[c] = ad.Uint32()
	}
	if err := ad.Err(); err != nil {
		return s, fmt.Errorf("cpu stats: %v: %w", err, ErrMalformed)
	}
	return s, nil
}

// DecodeGlobalStats decodes an IPCTNL_MSG_CT_GET_STATS reply body.
func DecodeGlobalStats(b []byte) (GlobalStats, error) {
	var g GlobalStats
	if len(b) < nfgenmsgLen {
		return g, fmt.Errorf("global stats: %d-byte body: %w", len(b), ErrMalformed)
	}
	ad, err := netlink.NewAttributeDecoder(b[nfgenmsgLen:])
	if err != nil {
		return g, fmt.Errorf("global stats: %v: %w", err, ErrMalformed)
	}
	ad.ByteOrder = binary.BigEndian
	var haveEntries, haveMax bool
	for ad.Next() {
		switch ad.Type() {
		case attrStatsGlobalE, attrStatsGlobalM:
			if len(ad.Bytes()) != 4 {
				return g, fmt.Errorf("global stats: attribute %d is %d bytes: %w", ad.Type(), len(ad.Bytes()), ErrMalformed)
			}
			if ad.Type() == attrStatsGlobalE {
				g.Entries, haveEntries = ad.Uint32(), true
			} else {
				g.MaxEntries, haveMax = ad.Uint32(), true
			}
		}
	}
	if err := ad.Err(); err != nil {
		return g, fmt.Errorf("global stats: %v: %w", err, ErrMalformed)
	}
	if !haveEntries || !haveMax {
		return g, fmt.Errorf("global stats: entries or max entries missing: %w", ErrMalformed)
	}
	return g, nil
}
