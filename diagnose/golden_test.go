package diagnose

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// goldenCases are the fixed inputs of the golden tests.
func goldenCases(t *testing.T) map[string]*Report {
	return map[string]*Report{
		"healthy":       fixtureReport(t, healthySample()),
		"nearly_full":   fixtureReport(t, nearlyFullSample()),
		"short_timeout": fixtureReport(t, shortTimeoutSample()),
		"retrans":       fixtureReport(t, retransSample()),
		"time_wait":     fixtureReport(t, timeWaitSample()),
		"attribution": runFakeOpts(t, fakeSampler{"pool": attributionSample()}, []netns.Target{attributionSample().Target},
			Options{MiddleboxIdleTimeout: 350 * time.Second}),
		"two_namespaces_one_gone": runFake(t, fakeSampler{"web": healthySample()}, []netns.Target{
			healthySample().Target, {Name: "gone", Path: "/run/netns/gone"},
		}),
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./diagnose -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./diagnose -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestGoldenText(t *testing.T) {
	for name, r := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteText(&b, r, TextOptions{}); err != nil {
				t.Fatal(err)
			}
			golden(t, name+".txt", b.Bytes())
			for i, line := range strings.Split(b.String(), "\n") {
				if n := utf8.RuneCountInString(line); n >= Width {
					t.Errorf("line %d is %d columns, want < %d: %q", i+1, n, Width, line)
				}
				if strings.Contains(line, "\x1b") {
					t.Errorf("line %d has an escape sequence without colour: %q", i+1, line)
				}
			}
		})
	}
}

func TestGoldenJSON(t *testing.T) {
	for name, r := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteJSON(&b, r); err != nil {
				t.Fatal(err)
			}
			golden(t, name+".json", b.Bytes())
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for name, r := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteJSON(&b, r); err != nil {
				t.Fatal(err)
			}
			var back Report
			dec := json.NewDecoder(&b)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&back, r) {
				t.Errorf("round trip changed the report:\n got %+v\nwant %+v", back, *r)
			}
		})
	}
}

// TestJSONFieldsDocumented checks that docs/DIAGNOSE.md names every field
// of the JSON document.
func TestJSONFieldsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "DIAGNOSE.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[reflect.Type]bool{}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[Report]().PkgPath() || seen[typ] {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Anonymous {
				walk(f.Type, path)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Errorf("%s.%s has no JSON name", typ.Name(), f.Name)
				continue
			}
			if !bytes.Contains(doc, []byte("`"+name+"`")) {
				t.Errorf("docs/DIAGNOSE.md does not document `%s` (%s%s)", name, path, name)
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(reflect.TypeFor[Report](), "")
}

func TestTextColorOnlyWhenAsked(t *testing.T) {
	r := fixtureReport(t, nearlyFullSample())
	var plain, color bytes.Buffer
	if err := WriteText(&plain, r, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := WriteText(&color, r, TextOptions{Color: true}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b[") {
		t.Error("plain output has ANSI escapes")
	}
	if !strings.Contains(color.String(), ansiRed+"CRITICAL"+ansiReset) {
		t.Error("coloured output does not paint CRITICAL red")
	}
	strip := strings.NewReplacer(ansiReset, "", ansiRed, "", ansiYellow, "", ansiGreen, "", ansiCyan, "")
	if got := strip.Replace(color.String()); got != plain.String() {
		t.Errorf("coloured output without its escapes differs from the plain output:\n%s", got)
	}
}
