package lab_test

import (
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestCountDumpCountsEveryEntry(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespace(t)
	buf := make([]byte, lab.FloorBufferSize)
	if got, err := lab.CountDump(ns.Target(), buf); err != nil || got != 0 {
		t.Fatalf("CountDump of an empty table = %d, %v", got, err)
	}
	const n = 5000
	if created, err := ns.CreateEntries(t, nstest.EstablishedEntries(n, 600)); created != n {
		t.Fatalf("created %d of %d: %v", created, n, err)
	}
	got, err := lab.CountDump(ns.Target(), buf)
	if err != nil || got != n {
		t.Fatalf("CountDump = %d, %v; want %d", got, err, n)
	}
	if want := ns.CountEntries(t); int(got) != want {
		t.Fatalf("CountDump = %d, conntrack -C = %d", got, want)
	}
}
