package events

// flowTable remembers when flows were created, keyed by CTA_ID, for the
// flow_table lifetime mode (no kernel timestamps). It holds at most size
// flows; inserting into a full table evicts the oldest. It is used by one
// goroutine only.
type flowTable struct {
	size      int
	m         map[uint32]int64 // CTA_ID -> creation, monotonic nanoseconds
	ring      []ringEntry      // insertion order, circular; may hold stale entries
	head, n   int
	evictions uint64
}

// ringEntry is one insertion; it is stale when the map no longer holds the
// same ID with the same start.
type ringEntry struct {
	id    uint32
	start int64
}

// newFlowTable returns an empty table for at most size flows.
func newFlowTable(size int) *flowTable {
	if size < 1 {
		size = 1
	}
	return &flowTable{size: size, m: make(map[uint32]int64)}
}

// Len returns the number of flows held.
func (t *flowTable) Len() int { return len(t.m) }

// Insert records that flow id started at start, evicting the oldest flow
// if the table is full.
func (t *flowTable) Insert(id uint32, start int64) {
	old, ok := t.m[id]
	if ok && old == start {
		return
	}
	if !ok && len(t.m) >= t.size {
		t.evictOldest()
	}
	t.m[id] = start
	t.push(ringEntry{id: id, start: start})
}

// Remove forgets flow id and returns its start.
func (t *flowTable) Remove(id uint32) (start int64, ok bool) {
	start, ok = t.m[id]
	if ok {
		delete(t.m, id)
	}
	return start, ok
}

// evictOldest removes the oldest live flow.
func (t *flowTable) evictOldest() {
	for t.n > 0 {
		e := t.pop()
		if s, ok := t.m[e.id]; ok && s == e.start {
			delete(t.m, e.id)
			t.evictions++
			return
		}
	}
}

// push appends to the ring, growing it up to twice the table size and
// dropping stale entries when it is full.
func (t *flowTable) push(e ringEntry) {
	if t.n == len(t.ring) {
		if len(t.ring) < 2*t.size {
			t.resize(min(max(2*len(t.ring), 64), 2*t.size))
		} else {
			t.compact()
		}
	}
	t.ring[(t.head+t.n)%len(t.ring)] = e
	t.n++
}

// pop removes the oldest ring entry.
func (t *flowTable) pop() ringEntry {
	e := t.ring[t.head]
	t.head = (t.head + 1) % len(t.ring)
	t.n--
	return e
}

// resize copies the ring, oldest first, into a new one of capacity c.
func (t *flowTable) resize(c int) {
	r := make([]ringEntry, c)
	for i := 0; i < t.n; i++ {
		r[i] = t.ring[(t.head+i)%len(t.ring)]
	}
	t.ring, t.head = r, 0
}

// compact drops the stale entries of a full ring, keeping the order. The
// live entries are at most size, so at least half the ring is freed, and
// the cost is amortised over as many insertions.
func (t *flowTable) compact() {
	w := 0
	for i := 0; i < t.n; i++ {
		e := t.ring[(t.head+i)%len(t.ring)]
		if s, ok := t.m[e.id]; ok && s == e.start {
			t.ring[(t.head+w)%len(t.ring)] = e
			w++
		}
	}
	t.n = w
}
