package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
)

func TestNamespaceFlagsChooseSelf(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string // target names
	}{
		{"nothing given", nil, []string{"self"}},
		{"paths only", []string{"--conntrack.netns=/run/netns/a"}, []string{"a"}},
		{"paths and self", []string{"--conntrack.netns=/run/netns/a", "--conntrack.netns-self"}, []string{"self", "a"}},
		{"discovery", []string{"--conntrack.netns-discover=/run/netns"}, []string{"self"}},
		{"discovery and paths", []string{"--conntrack.netns-discover-proc", "--conntrack.netns=/run/netns/a"}, []string{"self", "a"}},
		{"discovery without self", []string{"--conntrack.netns-discover=/run/netns", "--no-conntrack.netns-self"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := kingpin.New("test", "")
			var paths []string
			app.Flag("conntrack.netns", "").StringsVar(&paths)
			f := addNamespaceFlags(app.Command("serve", "").Default())
			if _, err := app.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			targets, err := f.staticTargets(paths)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tg := range targets {
				names = append(names, tg.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("targets %v, want %v", names, tc.want)
			}
			if len(checkTargets(targets)) == 0 {
				t.Error("start-up checks read nothing")
			}
			if f.max != defaultNetnsMax || f.interval != defaultNetnsDiscoverInterval {
				t.Errorf("defaults: max %d, interval %s", f.max, f.interval)
			}
		})
	}
}

func TestHelpListsNamespaceFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exit code %d: %s", code, stderr.String())
	}
	for _, flag := range []string{
		"--conntrack.netns-discover=DIR", "--[no-]conntrack.netns-discover-proc", "--conntrack.netns-discover-interval=30s",
		"--conntrack.netns-max=256", "--[no-]conntrack.netns-self", "CAP_SYS_ADMIN",
	} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}
