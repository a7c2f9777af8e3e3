package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestReceiveDestroysCountsEveryDeletion deletes entries over ctnetlink
// while the floor receiver listens: it must count one DESTROY event per
// deleted entry, those sent between two of its drains and those the final
// drain finds, and nothing for the insertions.
func TestReceiveDestroysCountsEveryDeletion(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	n := nstest.NewNamespace(t).Namespace
	if err := n.SetSysctl("net.netfilter.nf_conntrack_events", "1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	type result struct {
		n   uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := lab.ReceiveDestroys(ctx, n.Target(), 20*time.Millisecond, func() { close(ready) })
		done <- result{got, err}
	}()
	select {
	case <-ready:
	case r := <-done:
		t.Fatalf("ReceiveDestroys returned before it was ready: %v", r.err)
	}
	entries := lab.EstablishedEntries(1500, 600)
	if created, refused, err := n.Insert(entries); err != nil || refused != nil || created != len(entries) {
		t.Fatalf("Insert: created %d, refused %v, err %v", created, refused, err)
	}
	if deleted, refused, err := n.RemoveEntries(entries[:1000]); err != nil || refused != nil || deleted != 1000 {
		t.Fatalf("RemoveEntries: deleted %d, refused %v, err %v", deleted, refused, err)
	}
	time.Sleep(100 * time.Millisecond) // several drains
	// The rest right before the end: the final drain must count them.
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	cancel()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != uint64(len(entries)) {
		t.Fatalf("ReceiveDestroys counted %d DESTROY events, want %d", r.n, len(entries))
	}
}
