package sysctl

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

func dirWith(t *testing.T, values map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range values {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReadSkipsMissing(t *testing.T) {
	r := Reader{Dir: dirWith(t, map[string]string{Timestamp: "1", TCPTimeoutEstablished: "432000"})}
	got, err := r.Read(context.Background(), netns.Self(), Timestamp, Events, TCPTimeoutEstablished)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[Timestamp] != 1 || got[TCPTimeoutEstablished] != 432000 || got.Has(Events) {
		t.Fatalf("got %v", got)
	}
}

func TestReadErrors(t *testing.T) {
	r := Reader{Dir: dirWith(t, nil)}
	if _, err := r.Read(context.Background(), netns.Self(), Conntrack()...); !errors.Is(err, ErrNoSysctls) {
		t.Errorf("empty directory: %v, want ErrNoSysctls", err)
	}
	r = Reader{Dir: dirWith(t, map[string]string{Events: "often"})}
	if _, err := r.Read(context.Background(), netns.Self(), Events); err == nil {
		t.Error("a value that is not an integer read without error")
	}
	if _, err := r.Int(netns.Self(), Timestamp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing sysctl: %v, want os.ErrNotExist", err)
	}
}

func TestWriteThenInt(t *testing.T) {
	r := Reader{Dir: dirWith(t, map[string]string{Timestamp: "0"})}
	if err := r.Write(netns.Self(), Timestamp, 1); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Int(netns.Self(), Timestamp); err != nil || v != 1 {
		t.Fatalf("after writing 1: %d, %v", v, err)
	}
}

func TestConntrackNamesAreDistinct(t *testing.T) {
	names := Conntrack()
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(names) {
		t.Fatalf("duplicate names in %v", names)
	}
	for _, must := range []string{Events, Timestamp, TCPTimeoutEstablished, TCPTimeoutMaxRetrans, TCPTimeoutUnacknowledged} {
		if !slices.Contains(names, must) {
			t.Errorf("%s missing from Conntrack()", must)
		}
	}
}

// TestReadsTheKernel reads the real sysctls of the exporter's namespace.
func TestReadsTheKernel(t *testing.T) {
	if _, err := os.Stat(filepath.Join(Dir, Timestamp)); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("conntrack sysctls missing in CI: %v", err)
		}
		t.Skip("no conntrack sysctls here")
	}
	got, err := Reader{}.Read(context.Background(), netns.Self(), Conntrack()...)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Has(TCPTimeoutEstablished) || got[TCPTimeoutEstablished] <= 0 {
		t.Fatalf("established timeout %v", got)
	}
}

func TestReadIPv4(t *testing.T) {
	r := Reader{Dir: dirWith(t, nil), IPv4Dir: dirWith(t, map[string]string{KeepaliveTime: "600", KeepaliveProbes: "9"})}
	got, err := r.ReadIPv4(context.Background(), netns.Self(), Keepalive()...)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[KeepaliveTime] != 600 || got[KeepaliveProbes] != 9 || got.Has(KeepaliveInterval) {
		t.Fatalf("got %v", got)
	}
	if got, err := (Reader{IPv4Dir: dirWith(t, nil)}).ReadIPv4(context.Background(), netns.Self(), Keepalive()...); err != nil || len(got) != 0 {
		t.Errorf("empty directory: %v, %v; want nothing and no error", got, err)
	}
	r = Reader{IPv4Dir: dirWith(t, map[string]string{KeepaliveTime: "soon"})}
	if _, err := r.ReadIPv4(context.Background(), netns.Self(), KeepaliveTime); err == nil || !strings.Contains(err.Error(), "parse tcp_keepalive_time") {
		t.Errorf("a value that is not an integer: %v", err)
	}
}

// TestReadsKeepaliveOfTheKernel reads the keepalive sysctls of the
// exporter's own namespace: the kernel has all three.
func TestReadsKeepaliveOfTheKernel(t *testing.T) {
	if _, err := os.Stat(filepath.Join(IPv4Dir, KeepaliveTime)); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("keepalive sysctls missing in CI: %v", err)
		}
		t.Skip("no keepalive sysctls here")
	}
	got, err := Reader{}.ReadIPv4(context.Background(), netns.Self(), Keepalive()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Keepalive() {
		if got[name] <= 0 {
			t.Errorf("%s = %d", name, got[name])
		}
	}
}

func TestReadBoth(t *testing.T) {
	r := Reader{
		Dir:     dirWith(t, map[string]string{Timestamp: "1"}),
		IPv4Dir: dirWith(t, map[string]string{KeepaliveTime: "600"}),
	}
	ct, v4, err := r.ReadBoth(context.Background(), netns.Self(), []string{Timestamp, Events}, Keepalive())
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != 1 || ct[Timestamp] != 1 || len(v4) != 1 || v4[KeepaliveTime] != 600 {
		t.Fatalf("ReadBoth = %v, %v", ct, v4)
	}
	r.Dir = dirWith(t, nil)
	if _, _, err := r.ReadBoth(context.Background(), netns.Self(), Conntrack(), Keepalive()); !errors.Is(err, ErrNoSysctls) {
		t.Errorf("no conntrack sysctls: %v, want ErrNoSysctls", err)
	}
	r.IPv4Dir = dirWith(t, map[string]string{KeepaliveProbes: "many"})
	r.Dir = dirWith(t, map[string]string{Timestamp: "1"})
	if _, _, err := r.ReadBoth(context.Background(), netns.Self(), []string{Timestamp}, Keepalive()); err == nil {
		t.Error("a keepalive value that is not an integer read without error")
	}
}
