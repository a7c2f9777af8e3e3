package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestNewFormats(t *testing.T) {
	var buf bytes.Buffer
	l, err := New("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hidden")
	l.Info("shown", zap.String("netns", "self"))
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("json line %q: %v", buf.String(), err)
	}
	if rec["msg"] != "shown" || rec["netns"] != "self" || rec["level"] != "info" {
		t.Errorf("json record %v", rec)
	}

	buf.Reset()
	l, err = New("debug", "logfmt", &buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("shown too")
	if !strings.Contains(buf.String(), `level=debug`) || !strings.Contains(buf.String(), `msg="shown too"`) {
		t.Errorf("logfmt line %q", buf.String())
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		level, format, want string
		is                  error
	}{
		{"loud", "logfmt", `log level: unknown level "loud" (want debug, info, warn or error)`, ErrUnknownLevel},
		{"", "logfmt", `log level: unknown level "" (want debug, info, warn or error)`, ErrUnknownLevel},
		{"info", "xml", `log format: unknown format "xml" (want logfmt or json)`, ErrUnknownFormat},
	} {
		if _, err := New(tc.level, tc.format, &bytes.Buffer{}); !errors.Is(err, tc.is) || err.Error() != tc.want {
			t.Errorf("New(%q, %q) = %v, want %q", tc.level, tc.format, err, tc.want)
		}
	}
}

func TestSlogBridge(t *testing.T) {
	var buf bytes.Buffer
	l, err := New("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	Slog(l).InfoContext(context.Background(), "from slog", "address", "127.0.0.1:9549")
	if !strings.Contains(buf.String(), `"msg":"from slog"`) || !strings.Contains(buf.String(), `"address":"127.0.0.1:9549"`) {
		t.Errorf("slog record %q", buf.String())
	}
}
