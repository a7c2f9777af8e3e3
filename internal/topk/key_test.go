package topk

import (
	"net/netip"
	"testing"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.1.2.3", "255.255.255.255", "::", "::ffff:10.1.2.3", "2001:db8::1", "fe80::1:2:3:4"} {
		a := netip.MustParseAddr(s)
		if got := AddrKey(a).Addr(); got != a {
			t.Fatalf("%s -> %s", a, got)
		}
		for _, port := range []uint16{0, 80, 65535} {
			k := AddrPortKey(a, port)
			if k.Addr() != a || k.Port() != port || k.Number() != 0 {
				t.Fatalf("%s port %d -> %s port %d number %d", a, port, k.Addr(), k.Port(), k.Number())
			}
		}
	}
	// An IPv4 address and its IPv4-mapped IPv6 form are different keys,
	// and so are an address and the same address with port 0.
	a4, a6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:10.1.2.3")
	if AddrKey(a4) == AddrKey(a6) || AddrKey(a4) == AddrPortKey(a4, 0) || AddrPortKey(a4, 1) == AddrPortKey(a6, 1) {
		t.Fatal("distinct items share a key")
	}
	if k := NumberKey(1 << 40); k.Number() != 1<<40 || k.Addr().IsValid() || k.Port() != 0 {
		t.Fatalf("number key %+v", k)
	}
}

func TestKeyCompare(t *testing.T) {
	ordered := []Key{
		NumberKey(0), NumberKey(7),
		AddrKey(netip.MustParseAddr("9.0.0.1")), AddrKey(netip.MustParseAddr("10.0.0.1")),
		AddrKey(netip.MustParseAddr("::1")), AddrKey(netip.MustParseAddr("2001:db8::1")),
		AddrPortKey(netip.MustParseAddr("10.0.0.1"), 443), AddrPortKey(netip.MustParseAddr("10.0.0.1"), 8080),
		AddrPortKey(netip.MustParseAddr("10.0.0.2"), 22), AddrPortKey(netip.MustParseAddr("2001:db8::1"), 1),
	}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := ordered[i].Compare(ordered[j]); got != want {
				t.Fatalf("compare %d %d = %d, want %d", i, j, got, want)
			}
		}
	}
}
