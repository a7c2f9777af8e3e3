package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// ErrStopped reports that the Subscriber was stopped.
var ErrStopped = errors.New("event subscriber stopped")

// ErrEnableTimestamps reports that Config.EnableTimestamps was set but
// nf_conntrack_timestamp could not be set to 1.
var ErrEnableTimestamps = errors.New("cannot enable conntrack timestamps")

// Subscriber receives the conntrack events of one network namespace.
type Subscriber struct {
	target netns.Target
	cfg    Config
	log    *zap.Logger
	// sysctls reads and, with EnableTimestamps, writes the namespace's
	// sysctls.
	sysctls sysctl.Reader
	c       counters
	h       *handler

	mu        sync.Mutex
	sock      *eventSocket // nil between sockets
	lost      uint64       // drops of every socket, counted so far
	lastDrops uint32       // last SK_MEMINFO_DROPS read from sock
	restarts  uint64
	lastErr   error

	// syncs carries Sync requests to the receive loop while it sleeps.
	syncs chan chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Subscriber for the namespace of target that hands
// lifetimes to sink. Start starts it.
func New(target netns.Target, cfg Config, sink Sink) *Subscriber {
	cfg = cfg.withDefaults()
	s := &Subscriber{
		target: target,
		cfg:    cfg,
		log:    cfg.Logger.With(zap.String("netns", target.Name)),
		syncs:  make(chan chan struct{}),
	}
	s.h = newHandler(&s.c, sink, cfg.FlowTableSize, systemClock(time.Now()))
	attr, err := NewAttribution(cfg.TopWindow)
	if err != nil {
		s.log.Warn("top-k window options rejected; using the default window", zap.Error(err))
		attr, _ = NewAttribution(topk.WindowOptions{})
	}
	s.h.attr = attr
	return s
}

// Attribution returns the Subscriber's top sources of flow ends and top
// destinations of silent ends over its sliding window. It is safe to read
// while the Subscriber runs.
func (s *Subscriber) Attribution() *Attribution { return s.h.attr }

// Start opens the socket and starts receiving in the background. It
// returns the error of the first attempt, and then nothing starts. Later
// failures restart the socket after a backoff and show in Stats until it
// is open again. ctx or Stop end the Subscriber.
func (s *Subscriber) Start(ctx context.Context) error {
	buf, err := newRecvBatch()
	if err != nil {
		return err
	}
	sock, err := s.open()
	if err != nil {
		_ = buf.free()
		return err
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.run(ctx, sock, buf)
	return nil
}

// Stop ends the Subscriber, closes its socket and waits for it; the
// counters keep their values.
func (s *Subscriber) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
}

// Sync returns once the events the receive loop let queue in the kernel
// buffer before the call are counted, or when ctx ends. Call it before
// Stats, Attribution and the sink are read for a scrape: between two
// reads the loop lets events queue for up to Config.Coalesce, and Sync
// cuts that wait short. While the loop is not sleeping it is reading the
// socket or waiting for an empty one, and Sync returns at once.
func (s *Subscriber) Sync(ctx context.Context) error {
	req := make(chan struct{})
	select {
	case s.syncs <- req:
	default:
		return nil
	}
	select {
	case <-req:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("netns %s: wait for queued events: %w", s.target, ctx.Err())
	}
}

// coalesce returns the receive loop's sleep: Config.Coalesce, or at most
// flowTableCoalesce in the flow_table mode, whose lifetimes are receive
// times.
func (s *Subscriber) coalesce() time.Duration {
	if Mode(s.c.mode.Load()) == ModeFlowTable {
		return min(s.cfg.Coalesce, flowTableCoalesce)
	}
	return s.cfg.Coalesce
}

// flowTableCoalesce bounds the sleep of the receive loop in the
// flow_table mode: a lifetime there is the time between the receipt of
// the NEW and of the DESTROY event, and each may wait in the socket for
// as long as the loop sleeps.
const flowTableCoalesce = 10 * time.Millisecond

// Stats returns the counters, without a system call. Lost is the drop
// count the receive loop read at each overrun and again once the socket
// was empty after it, when the kernel had stopped dropping: it is exact
// as of the loop's last drain, as the event counts are (Sync has one
// done first).
func (s *Subscriber) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Lost:     s.lost,
		Restarts: s.restarts,
		Running:  s.sock != nil,
		Err:      s.lastErr,
	}
	if s.sock != nil {
		st.ReceiveBuffer = s.sock.rcvbuf
	}
	s.mu.Unlock()
	for i := range st.Events {
		st.Events[i] = s.c.events[i].Load()
	}
	st.Overruns = s.c.overruns.Load()
	st.Malformed = s.c.malformed.Load()
	st.Observed = s.c.observed.Load()
	st.WithoutTimestamp = s.c.withoutTimestamp.Load()
	st.Evictions = s.c.evictions.Load()
	st.FlowTableEntries = int(s.c.tableLen.Load())
	st.Mode = Mode(s.c.mode.Load())
	return st
}

// readDropsLocked adds the current socket's new drops to lost. The
// kernel's counter is 32 bits wide; the difference wraps with it.
func (s *Subscriber) readDropsLocked() {
	if s.sock == nil {
		return
	}
	d, err := s.sock.drops()
	if err != nil {
		s.log.Warn("reading the event socket's drop count failed", zap.Error(err))
		return
	}
	s.lost += uint64(d - s.lastDrops)
	s.lastDrops = d
}

// mode reads nf_conntrack_timestamp, after setting it if configured, and
// returns the lifetime mode it calls for.
func (s *Subscriber) mode() Mode {
	v, err := s.sysctls.Int(s.target, sysctl.Timestamp)
	if err != nil {
		s.log.Warn("cannot read nf_conntrack_timestamp, measuring lifetimes with the flow table", zap.Error(err))
		return ModeFlowTable
	}
	if v == 1 {
		return ModeTimestamp
	}
	return ModeFlowTable
}

// open prepares the namespace and opens a socket.
func (s *Subscriber) open() (*eventSocket, error) {
	if s.cfg.EnableTimestamps {
		if err := s.sysctls.Write(s.target, sysctl.Timestamp, 1); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrEnableTimestamps, err)
		}
	}
	if v, err := s.sysctls.Int(s.target, sysctl.Events); err == nil && v == 0 {
		s.log.Warn("net.netfilter.nf_conntrack_events is 0 in this namespace: the kernel sends no events, " +
			"so no lifetimes are measured; set it to 1 (see docs/EVENTS.md)")
	}
	mode := s.mode()
	sock, err := openSocket(s.target, s.cfg.BufferSize, mode == ModeFlowTable)
	if err != nil {
		return nil, err
	}
	if !sock.forced {
		s.log.Warn("SO_RCVBUFFORCE refused (no CAP_NET_ADMIN?), receive buffer capped by net.core.rmem_max",
			zap.Int("requested_bytes", s.cfg.BufferSize), zap.Int("receive_buffer_bytes", sock.rcvbuf))
	}
	s.c.mode.Store(int32(mode))
	s.mu.Lock()
	s.sock, s.lastDrops, s.lastErr = sock, 0, nil
	s.mu.Unlock()
	s.log.Debug("event socket open", zap.Stringer("mode", mode), zap.Int("receive_buffer_bytes", sock.rcvbuf))
	return sock, nil
}

// closeSocket closes the current socket after counting its last drops.
func (s *Subscriber) closeSocket(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sock == nil {
		return
	}
	s.readDropsLocked()
	if err := s.sock.close(); err != nil {
		s.log.Debug("closing the event socket", zap.Error(err))
	}
	s.sock, s.lastDrops, s.lastErr = nil, 0, cause
}

// run receives on sock into buf, and on new sockets after failures, until
// ctx ends; it frees buf when it returns.
func (s *Subscriber) run(ctx context.Context, sock *eventSocket, buf *recvBatch) {
	defer close(s.done)
	defer func() {
		if err := buf.free(); err != nil {
			s.log.Warn("freeing the receive memory", zap.Error(err))
		}
	}()
	backoff := s.cfg.RetryMin
	for {
		opened := time.Now()
		err := s.session(ctx, sock, buf)
		if ctx.Err() != nil {
			s.closeSocket(ErrStopped)
			return
		}
		s.closeSocket(err)
		if time.Since(opened) > s.cfg.RetryMax {
			backoff = s.cfg.RetryMin
		}
		for {
			s.log.Warn("event subscriber failed, restarting", zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, s.cfg.RetryMax)
			sock, err = s.open()
			if err == nil {
				break
			}
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
	}
}

// session receives on one socket until it fails or ctx ends, and keeps the
// lifetime mode in step with nf_conntrack_timestamp meanwhile.
func (s *Subscriber) session(ctx context.Context, sock *eventSocket, buf *recvBatch) error {
	stopInterrupt := context.AfterFunc(ctx, sock.interrupt)
	defer stopInterrupt()
	checkDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.followMode(ctx, sock, checkDone)
	}()
	defer func() {
		close(checkDone)
		wg.Wait()
	}()
	return sock.receive(buf, receiverOf{s}, s.coalesce, s.syncs)
}

// receiverOf hands the datagrams of a Subscriber's socket to its handler
// and counts what goes wrong.
type receiverOf struct{ s *Subscriber }

func (r receiverOf) batch()            { r.s.h.beginBatch() }
func (r receiverOf) endBatch()         { r.s.h.endBatch() }
func (r receiverOf) datagram(b []byte) { r.s.h.datagram(b) }
func (r receiverOf) truncated()        { r.s.c.malformed.Add(1) }
func (r receiverOf) overrun()          { r.s.overrun() }
func (r receiverOf) caughtUp()         { r.s.readDrops() }

// readDrops reads how many events the current socket dropped.
func (s *Subscriber) readDrops() {
	s.mu.Lock()
	s.readDropsLocked()
	s.mu.Unlock()
}

// overrun counts an ENOBUFS and reads how many events were dropped.
func (s *Subscriber) overrun() {
	s.c.overruns.Add(1)
	s.readDrops()
}

// ErrNamespaceChanged reports that the namespace path of the target no
// longer leads to the namespace the socket was opened in: it was deleted,
// or deleted and created again.
var ErrNamespaceChanged = errors.New("network namespace deleted or replaced")

// followMode rereads nf_conntrack_timestamp periodically and joins or
// leaves the NEW group when the mode changes. It also checks that the
// target still names the socket's namespace; if not, it fails the socket,
// which would otherwise keep a deleted namespace alive.
func (s *Subscriber) followMode(ctx context.Context, sock *eventSocket, done <-chan struct{}) {
	t := time.NewTicker(s.cfg.ModeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-t.C:
		}
		if ino, err := s.target.Inode(); err != nil {
			sock.fail(fmt.Errorf("%w: %w", ErrNamespaceChanged, err))
			return
		} else if ino != sock.ino {
			sock.fail(fmt.Errorf("netns %s: %w", s.target, ErrNamespaceChanged))
			return
		}
		mode := s.mode()
		if mode == Mode(s.c.mode.Load()) {
			continue
		}
		// Join NEW before switching to the flow table, and switch away
		// before leaving, so no new flow is missed in between.
		if mode == ModeFlowTable {
			if err := sock.setNew(true); err != nil {
				s.log.Warn("cannot switch to the flow_table mode", zap.Error(err))
				continue
			}
			s.c.mode.Store(int32(mode))
		} else {
			s.c.mode.Store(int32(mode))
			if err := sock.setNew(false); err != nil {
				s.log.Warn("cannot leave the NEW group", zap.Error(err))
			}
		}
		s.log.Info("lifetime mode changed", zap.Stringer("mode", mode))
	}
}
