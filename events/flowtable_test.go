package events

import "testing"

func TestFlowTableEvictsOldest(t *testing.T) {
	ft := newFlowTable(3)
	for i := uint32(1); i <= 3; i++ {
		ft.Insert(i, int64(i))
	}
	ft.Insert(4, 4) // evicts 1
	if _, ok := ft.Remove(1); ok || ft.evictions != 1 || ft.Len() != 3 {
		t.Fatalf("after overflow: len %d, evictions %d", ft.Len(), ft.evictions)
	}
	// Removed flows leave stale ring entries that eviction skips.
	if s, ok := ft.Remove(2); !ok || s != 2 {
		t.Fatalf("remove 2: %d %v", s, ok)
	}
	ft.Insert(5, 5)
	ft.Insert(6, 6) // evicts 3, the oldest live flow
	if _, ok := ft.Remove(3); ok || ft.evictions != 2 {
		t.Fatalf("evictions %d", ft.evictions)
	}
	for id, want := range map[uint32]int64{4: 4, 5: 5, 6: 6} {
		if s, ok := ft.Remove(id); !ok || s != want {
			t.Fatalf("remove %d: %d %v", id, s, ok)
		}
	}
	if ft.Len() != 0 {
		t.Fatalf("len %d", ft.Len())
	}
}

func TestFlowTableReinsert(t *testing.T) {
	ft := newFlowTable(2)
	ft.Insert(1, 10)
	ft.Insert(1, 10) // the same NEW twice: one entry
	ft.Insert(1, 20) // a new start for the same ID replaces it
	ft.Insert(2, 30)
	ft.Insert(3, 40) // evicts 1 (start 20), skipping the stale entries
	if _, ok := ft.Remove(1); ok || ft.evictions != 1 || ft.Len() != 2 {
		t.Fatalf("len %d evictions %d", ft.Len(), ft.evictions)
	}
}

func TestFlowTableBoundedRingUnderChurn(t *testing.T) {
	const size = 100
	ft := newFlowTable(size)
	// Long-lived flows 1..50 stay; a million short flows come and go.
	for i := uint32(1); i <= 50; i++ {
		ft.Insert(i, int64(i))
	}
	for i := uint32(1000); i < 1_001_000; i++ {
		ft.Insert(i, int64(i))
		if _, ok := ft.Remove(i); !ok {
			t.Fatalf("flow %d lost", i)
		}
	}
	if ft.evictions != 0 || ft.Len() != 50 || len(ft.ring) > 2*size {
		t.Fatalf("evictions %d, len %d, ring %d", ft.evictions, ft.Len(), len(ft.ring))
	}
	for i := uint32(1); i <= 50; i++ {
		if s, ok := ft.Remove(i); !ok || s != int64(i) {
			t.Fatalf("long-lived flow %d: %d %v", i, s, ok)
		}
	}
	if newFlowTable(0).size != 1 {
		t.Fatal("size 0")
	}
}
