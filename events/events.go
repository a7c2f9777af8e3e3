// Package events subscribes to the ctnetlink DESTROY events of a network
// namespace and turns them into flow lifetimes, without losing any event
// silently.
//
// A Subscriber owns one netlink socket in one namespace, joined to the
// NFNLGRP_CONNTRACK_DESTROY group (and NFNLGRP_CONNTRACK_NEW only in the
// flow_table mode, below). Its receive loop is its own, on a plain
// non-blocking socket that the Go runtime's poller never sees: the socket sits
// in a private epoll instance with EPOLLONESHOT, so that events queued
// while the loop reads or sleeps wake no thread. The receive buffer is
// forced large with SO_RCVBUFFORCE; the socket is drained with recvmmsg, 64
// datagrams per call, into one reused buffer, then left to fill for up to
// 5 s (Config.Coalesce; a scrape cuts that short with Subscriber.Sync) before
// the next drain; and messages are decoded by ctnl.DecodeFlow without
// allocating. When the kernel could not queue an event (the buffer was
// full) it counts the drop on the socket and the next receive fails with
// ENOBUFS: the loop counts the overrun, reads the exact number of dropped
// events (SK_MEMINFO_DROPS of SO_MEMINFO) and keeps going. If the socket
// fails otherwise the Subscriber opens a new one after a backoff.
//
// Lifetimes come from the DESTROY event alone when the flow carries kernel
// timestamps (net.netfilter.nf_conntrack_timestamp=1 when it was created):
// stop - start, no state per flow. Without timestamps the Subscriber also
// listens to NEW events and keeps the receive time of each new flow in a
// bounded table keyed by CTA_ID (ModeFlowTable). Only flows that reached
// ASSURED (for TCP: ESTABLISHED) are observed; those with no usable start
// are counted instead. Each lifetime is handed to the caller's Sink as a
// Lifetime (protocol number, TCP state, seconds); the package knows no
// Prometheus, and the histogram adapts to Sink where the pieces are wired.
package events

import (
	"time"

	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// Defaults of Config.
const (
	// DefaultBufferSize is the receive buffer requested with
	// SO_RCVBUFFORCE: 128 MiB, which the kernel doubles to 256 MiB of
	// accounting room, enough to queue a burst of 200,000 DESTROY events
	// (about 1,280 bytes of socket memory each) even if the reader stalls
	// completely. Memory is used only while events are queued.
	DefaultBufferSize = 128 << 20
	// DefaultFlowTableSize bounds the flow table of ModeFlowTable.
	DefaultFlowTableSize = 262144
	// DefaultModeCheckInterval is how often the Subscriber rereads
	// nf_conntrack_timestamp to pick the lifetime mode.
	DefaultModeCheckInterval = 30 * time.Second
	// DefaultRetryMin and DefaultRetryMax bound the backoff between two
	// attempts to open the socket again after a failure.
	DefaultRetryMin = time.Second
	DefaultRetryMax = time.Minute
	// DefaultCoalesce is how long the receive loop lets events queue in
	// the socket after it read some, before it reads again: a busy
	// namespace costs a few reads and one wake-up every few seconds
	// instead of a wake-up per event. Scrapes do not see the wait:
	// Subscriber.Sync, called first by every scrape, has the loop read
	// what is queued. At high rates the loop reads more often, so that
	// the queue stays under a quarter of the receive buffer, and in the
	// flow_table mode at least every 10 ms.
	DefaultCoalesce = 5 * time.Second
)

// Config configures a Subscriber. The zero value uses the defaults.
type Config struct {
	// BufferSize is the socket receive buffer in bytes, set with
	// SO_RCVBUFFORCE (needs CAP_NET_ADMIN; without it the Subscriber
	// falls back to SO_RCVBUF, capped by net.core.rmem_max). The kernel
	// doubles the value.
	BufferSize int
	// FlowTableSize bounds the number of flows whose start the flow_table
	// mode remembers; inserting into a full table evicts the oldest flow.
	FlowTableSize int
	// EnableTimestamps sets net.netfilter.nf_conntrack_timestamp=1 in the
	// namespace when the socket is opened. Off by default: the exporter
	// changes no sysctl unless asked to.
	EnableTimestamps bool
	// ModeCheckInterval is how often nf_conntrack_timestamp is read again.
	ModeCheckInterval time.Duration
	// RetryMin and RetryMax bound the backoff between restarts.
	RetryMin, RetryMax time.Duration
	// Coalesce is how long the receive loop sleeps after a wake-up that
	// read events, before it reads again; meanwhile events queue in the
	// socket's receive buffer, and Sync reads them at once. The first
	// sleep after a quiet spell is at most 10 ms and measures the rate;
	// at rates where more than a quarter of BufferSize would queue in
	// Coalesce, the sleep is shorter (what overflows anyway is still
	// counted exactly in Stats.Lost); in the flow_table mode it is at
	// most 10 ms. An idle socket is waited on, not polled: the first
	// event after a quiet spell is read at once. 0 means
	// DefaultCoalesce; a negative value reads again at once, one wake-up
	// per burst of events.
	Coalesce time.Duration
	// TopWindow configures the sliding windows of the Subscriber's
	// Attribution; the zero value is a 5-minute window in 1-minute steps.
	// Options that topk.WindowOptions.Validate rejects fall back to the
	// zero value, with a warning.
	TopWindow topk.WindowOptions
	// Logger receives restarts and warnings; nil logs nothing.
	Logger *zap.Logger
}

// withDefaults fills in zero fields.
func (c Config) withDefaults() Config {
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.FlowTableSize <= 0 {
		c.FlowTableSize = DefaultFlowTableSize
	}
	if c.ModeCheckInterval <= 0 {
		c.ModeCheckInterval = DefaultModeCheckInterval
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.Coalesce == 0 {
		c.Coalesce = DefaultCoalesce
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Mode is how lifetimes are measured.
type Mode int32

// The lifetime modes.
const (
	// ModeTimestamp: lifetime = CTA_TIMESTAMP stop - start of the DESTROY
	// event; nf_conntrack_timestamp is 1.
	ModeTimestamp Mode = iota
	// ModeFlowTable: lifetime = receive time of DESTROY - receive time of
	// NEW, from a bounded table; nf_conntrack_timestamp is 0.
	ModeFlowTable
	// NumModes is the number of modes, not a mode.
	NumModes
)

// String returns the label value of the mode.
func (m Mode) String() string {
	switch m {
	case ModeTimestamp:
		return "timestamp"
	case ModeFlowTable:
		return "flow_table"
	}
	return "unknown"
}

// EventType is the type of a conntrack event.
type EventType int

// The event types, as the type label names them.
const (
	EventNew EventType = iota
	EventUpdate
	EventDestroy
	// NumEventTypes is the number of event types, not a type.
	NumEventTypes
)

// String returns the label value of the event type.
func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return "unknown"
}

// Lifetime is one flow that reached ASSURED (for TCP: ESTABLISHED) and
// ended.
type Lifetime struct {
	// Protocol is the IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...).
	Protocol uint8
	// TCPState is the kernel's TCP conntrack state at DESTROY (enum
	// tcp_conntrack: 3 ESTABLISHED, 7 TIME_WAIT, 8 CLOSE, ...); 0 for
	// other protocols and when the event carried no state.
	TCPState uint8
	// Seconds is how long the flow lived; never negative.
	Seconds float64
}

// Sink receives the lifetime of every ASSURED flow that ended. It is called
// from the receive loop and must not block or allocate.
type Sink interface {
	Observe(Lifetime)
}

// Stats is a snapshot of a Subscriber's counters. Counters only grow
// during the Subscriber's life, across socket restarts.
type Stats struct {
	// Events counts the events received, by type.
	Events [NumEventTypes]uint64
	// Lost counts the events the kernel dropped because the socket's
	// receive queue was full: the sum of SK_MEMINFO_DROPS over every
	// socket the Subscriber opened.
	Lost uint64
	// Overruns counts the receives that failed with ENOBUFS.
	Overruns uint64
	// Malformed counts messages that did not decode; they are skipped.
	Malformed uint64
	// Observed counts the lifetimes handed to the Sink.
	Observed uint64
	// WithoutTimestamp counts ASSURED flows that ended with no usable
	// start: no kernel timestamp and no flow-table entry.
	WithoutTimestamp uint64
	// Evictions counts flows evicted from the full flow table.
	Evictions uint64
	// FlowTableEntries is the number of flows in the flow table.
	FlowTableEntries int
	// Mode is the lifetime mode in use.
	Mode Mode
	// ReceiveBuffer is the socket's SO_RCVBUF as the kernel reports it
	// (twice the requested size); 0 while no socket is open.
	ReceiveBuffer int
	// Restarts counts the sockets opened again after a failure.
	Restarts uint64
	// Running reports whether a socket is open and being read.
	Running bool
	// Err is the last failure when not Running.
	Err error
}
