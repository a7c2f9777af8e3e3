// Package topk counts the most frequent items of a stream in bounded
// memory: Summary, a Space-Saving summary over one pass (a table scan),
// and Window, top counts over a sliding time window (an event stream),
// built from one Summary per time step.
//
// Neither allocates per item once its memory has grown to its capacity,
// and neither grows beyond it, however many distinct items the stream
// holds. Counts are exact while the distinct items fit in the capacity;
// beyond it every result reports how far its counts may be off.
package topk

import (
	"cmp"
	"net/netip"
)

// Kinds of keys, in their sort order.
const (
	kindNumber uint8 = iota
	kindV4
	kindV6
	kindV4Port
	kindV6Port
)

// Key identifies one counted item: a number, an IP address, or an IP
// address and a port. Keys are comparable; build them with NumberKey,
// AddrKey or AddrPortKey.
type Key struct {
	hi, lo uint64
	port   uint16
	kind   uint8
}

// NumberKey returns the key of a number (a port, a zone, a mark ...).
func NumberKey(n uint64) Key { return Key{lo: n} }

// AddrKey returns the key of an address. An IPv4 address and its
// IPv4-mapped IPv6 form are different keys; the zone is ignored.
func AddrKey(a netip.Addr) Key {
	if a.Is4() {
		b := a.As4()
		return Key{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3]), kind: kindV4}
	}
	b := a.As16()
	var hi, lo uint64
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return Key{hi: hi, lo: lo, kind: kindV6}
}

// AddrPortKey returns the key of an address and a port.
func AddrPortKey(a netip.Addr, port uint16) Key {
	k := AddrKey(a)
	k.port = port
	if k.kind == kindV4 {
		k.kind = kindV4Port
	} else {
		k.kind = kindV6Port
	}
	return k
}

// Number returns the number of a NumberKey, or 0.
func (k Key) Number() uint64 {
	if k.kind != kindNumber {
		return 0
	}
	return k.lo
}

// Addr returns the address of an AddrKey or AddrPortKey, or the zero
// Addr.
func (k Key) Addr() netip.Addr {
	switch k.kind {
	case kindV4, kindV4Port:
		return netip.AddrFrom4([4]byte{byte(k.lo >> 24), byte(k.lo >> 16), byte(k.lo >> 8), byte(k.lo)})
	case kindV6, kindV6Port:
		var b [16]byte
		for i := range 8 {
			b[7-i] = byte(k.hi >> (8 * i))
			b[15-i] = byte(k.lo >> (8 * i))
		}
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// Port returns the port of an AddrPortKey, or 0.
func (k Key) Port() uint16 { return k.port }

// Compare orders keys: numbers, then IPv4 then IPv6 addresses, then IPv4
// then IPv6 address-port pairs; numerically within each kind.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.kind, o.kind); c != 0 {
		return c
	}
	if c := cmp.Compare(k.hi, o.hi); c != 0 {
		return c
	}
	if c := cmp.Compare(k.lo, o.lo); c != 0 {
		return c
	}
	return cmp.Compare(k.port, o.port)
}

// mix64 is the murmur3 64-bit finaliser.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hash hashes k with a per-summary random seed, so that no set of keys
// collides on every process.
func (k Key) hash(seed uint64) uint64 {
	return mix64(mix64(seed^k.hi) ^ k.lo ^ uint64(k.port)<<40 ^ uint64(k.kind)<<56)
}
