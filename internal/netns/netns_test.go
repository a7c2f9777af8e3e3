package netns_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestNameFromPath(t *testing.T) {
	for path, want := range map[string]string{
		"/run/netns/blue":      "blue",
		"/var/run/netns/red/":  "red",
		"/proc/1234/ns/net":    "pid-1234",
		"/proc/self/ns/net":    "pid-self",
		"/tmp/x/ns":            "/tmp/x/ns",
		"/proc/1/2/ns/net":     "/proc/1/2/ns/net",
		"relative/netns/green": "relative/netns/green",
	} {
		if got := netns.NameFromPath(path); got != want {
			t.Errorf("NameFromPath(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestTargetsFromPaths(t *testing.T) {
	got, err := netns.TargetsFromPaths(nil)
	if err != nil || len(got) != 1 || !got[0].IsSelf() || got[0].Name != netns.SelfName {
		t.Fatalf("no paths: %v, %v", got, err)
	}
	got, err = netns.TargetsFromPaths([]string{"/run/netns/a", "/proc/7/ns/net"})
	if err != nil || len(got) != 2 || got[0].Name != "a" || got[1].Name != "pid-7" || got[1].Path != "/proc/7/ns/net" {
		t.Fatalf("two paths: %v, %v", got, err)
	}
	if _, err := netns.TargetsFromPaths([]string{""}); !errors.Is(err, netns.ErrEmptyPath) {
		t.Errorf("empty path: %v, want ErrEmptyPath", err)
	}
	_, err = netns.TargetsFromPaths([]string{"/run/netns/a", "/var/run/netns/a"})
	var same *netns.SameNameError
	if !errors.As(err, &same) || same.Path != "/var/run/netns/a" || same.Name != "a" || same.Earlier != "/run/netns/a" {
		t.Errorf("same name twice: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	_, err := netns.Target{Name: "x", Path: filepath.Join(t.TempDir(), "missing")}.Open()
	if !errors.Is(err, netns.ErrNotExist) {
		t.Errorf("missing path: %v, want ErrNotExist", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = netns.Target{Name: "x", Path: file}.Open()
	if !errors.Is(err, netns.ErrNotNetns) {
		t.Errorf("plain file: %v, want ErrNotNetns", err)
	}
}

// TestDoNeverLeavesMainThreadInside runs Do many times concurrently and
// checks that the process's main thread (what /proc/self/ns/net shows)
// stays in the original namespace.
func TestDoNeverLeavesMainThreadInside(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNamespace(t)
	inode := func(path string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before := inode("/proc/self/ns/net")
	want, err := ns.Target().Inode()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 250; j++ {
				err := ns.Target().Do(func() error {
					if got := inode("/proc/thread-self/ns/net"); got != want {
						return errors.New("Do ran outside the namespace")
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if after := inode("/proc/self/ns/net"); after != before {
		t.Fatalf("main thread moved to namespace %d (was %d)", after, before)
	}
}

// TestPathInode gives the inode Inode gives, for a namespace path and
// the exporter's own namespace, and ErrNotExist once the path is gone.
func TestPathInode(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNamespace(t)
	for _, target := range []netns.Target{ns.Target(), netns.Self()} {
		want, err := target.Inode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := target.PathInode()
		if err != nil || got != want {
			t.Errorf("%s: PathInode = %d, %v; Inode = %d", target, got, err, want)
		}
	}
	ns.Delete(t)
	if _, err := ns.Target().PathInode(); !errors.Is(err, netns.ErrNotExist) {
		t.Errorf("deleted namespace: %v, want ErrNotExist", err)
	}
}
