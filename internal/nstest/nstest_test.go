package nstest

import (
	"strings"
	"testing"
)

func TestCreateEntriesAndConnect(t *testing.T) {
	RequireRoot(t, "conntrack")
	p := NewPair(t)
	entries := EstablishedEntries(1000, 600)
	created, err := p.B.CreateEntries(t, entries)
	if err != nil || created != len(entries) {
		t.Fatalf("created %d of %d: %v", created, len(entries), err)
	}
	if got := p.B.CountEntries(t); got != 1000 {
		t.Fatalf("conntrack -C = %d, want 1000", got)
	}
	// The same entries again are refused: they already exist.
	created, err = p.B.CreateEntries(t, entries[:10])
	if created != 0 || err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Fatalf("duplicate create: created %d, err %v", created, err)
	}
	list := p.B.Conntrack(t, "-L", "-s", "198.19.0.0")
	if !strings.Contains(list, "ESTABLISHED") || !strings.Contains(list, "[ASSURED]") {
		t.Fatalf("entry not ASSURED ESTABLISHED: %s", list)
	}
	p.Connect(t, 3)
	// 3 connections are tracked in both namespaces.
	if got := p.A.CountEntries(t); got != 3 {
		t.Fatalf("A: conntrack -C = %d, want 3", got)
	}
	if got := p.B.CountEntries(t); got != 1003 {
		t.Fatalf("B: conntrack -C = %d, want 1003", got)
	}
}

func TestInCI(t *testing.T) {
	for value, want := range map[string]bool{
		"true": true, "1": true, "TRUE": true, "yes": true,
		"": false, "0": false, "false": false, "False": false,
	} {
		t.Setenv("CI", value)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", value, got, want)
		}
	}
}
