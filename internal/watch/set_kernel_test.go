package watch

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestSetRealNamespaces(t *testing.T) {
	nstest.RequireRoot(t)
	static, a, b := nstest.NewNamespace(t), nstest.NewNamespace(t), nstest.NewNamespace(t)
	w := newFakeWatcher()
	scanner := discovery.New(discovery.Options{Dirs: []string{"/run/netns"}, Proc: true, SkipPID: os.Getpid()})
	set, err := New(Config{
		Static:     []netns.Target{netns.Self(), static.Target()},
		Discoverer: scanner,
		Max:        1000,
		Interval:   time.Hour,
		Watchers:   map[string]Watcher{"w": w},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer set.Close()

	names := func() map[string]netns.Target {
		out := map[string]netns.Target{}
		for _, tg := range set.Targets() {
			if _, dup := out[tg.Name]; dup {
				t.Errorf("%s listed twice", tg.Name)
			}
			out[tg.Name] = tg
		}
		return out
	}
	got := names()
	// The static path is watched once, under its static name; the other
	// two under their /run/netns names; the host is "self".
	for _, n := range []string{"self", static.Name, a.Name, b.Name} {
		if _, ok := got[n]; !ok {
			t.Errorf("%s not watched; watching %v", n, targetNames(set.Targets()))
		}
	}
	inodes := map[uint64]string{}
	for _, tg := range set.Targets() {
		ino, err := tg.Inode()
		if err != nil {
			t.Errorf("%s: %v", tg, err)
			continue
		}
		if prev, dup := inodes[ino]; dup {
			t.Errorf("%s and %s are one namespace", prev, tg.Name)
		}
		inodes[ino] = tg.Name
	}

	// b deleted: dropped. The static one deleted and created again under
	// the same path: still watched, its watcher moved to the new one.
	b.Delete(t)
	staticIno, _ := static.Target().Inode()
	// Hold the old namespace alive until the new one exists, so that the
	// kernel cannot give the new one the freed inode number.
	old, err := os.Open(static.Path)
	if err != nil {
		t.Fatal(err)
	}
	static.Delete(t)
	nstest.Run(t, "ip", "netns", "add", static.Name)
	old.Close()
	t.Cleanup(func() { nstest.Run(t, "ip", "netns", "del", static.Name) })
	if ino, _ := static.Target().Inode(); ino == staticIno {
		t.Fatal("namespace created again has the old inode")
	}
	w.takeLog()
	set.Rescan()
	got = names()
	if _, ok := got[b.Name]; ok {
		t.Errorf("deleted %s still watched", b.Name)
	}
	if _, ok := got[static.Name]; !ok {
		t.Errorf("static %s dropped", static.Name)
	}
	log := w.takeLog()
	for _, want := range []string{"forget " + b.Name, "forget " + static.Name, "watch " + static.Name} {
		if !slices.Contains(log, want) {
			t.Errorf("watcher calls %v lack %q", log, want)
		}
	}
}

func TestSetStaticPathsOfOneNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	n := nstest.NewNamespace(t)
	cmd := nstest.Run(t, "sh", "-c", "ip netns exec "+n.Name+" sleep 60 >/dev/null 2>&1 & echo $!")
	pid := cmd[:len(cmd)-1]
	t.Cleanup(func() { nstest.Run(t, "kill", pid) })
	var viaProc netns.Target
	deadline := time.Now().Add(5 * time.Second)
	for {
		viaProc = netns.Target{Name: "pid-" + pid, Path: "/proc/" + pid + "/ns/net"}
		a, _ := viaProc.Inode()
		b, _ := n.Target().Inode()
		if a == b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("process did not enter the namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	set, err := New(Config{
		Static: []netns.Target{n.Target(), viaProc}, Max: 10, Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = set.Start(context.Background())
	if !errors.Is(err, ErrSameNamespace) {
		t.Errorf("Start = %v, want %v", err, ErrSameNamespace)
	}
	set.Close()

	// The exporter's own namespace named by a path: watched once, by path.
	set, err = New(Config{
		Static: []netns.Target{netns.Self(), {Name: "host", Path: "/proc/1/ns/net"}}, Max: 10, Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	selfIno, _ := netns.Self().Inode()
	hostIno, _ := netns.Target{Name: "host", Path: "/proc/1/ns/net"}.Inode()
	want := []string{"self", "host"}
	if selfIno == hostIno {
		want = []string{"host"}
	}
	if got := targetNames(set.Targets()); !slices.Equal(got, want) {
		t.Errorf("Targets = %v, want %v", got, want)
	}
}
