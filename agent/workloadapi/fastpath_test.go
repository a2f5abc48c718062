package workloadapi

import (
	"bytes"
	"log/slog"
	"testing"
)

// countingHandler counts WithAttrs calls (where text and JSON handlers
// format attributes).
type countingHandler struct {
	slog.Handler
	withAttrs *int
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*h.withAttrs++
	return countingHandler{h.Handler.WithAttrs(as), h.withAttrs}
}

// callLog writes what With writes, and formats nothing for a call that
// logs nothing enabled.
func TestCallLogSameOutputAsWith(t *testing.T) {
	var a, b bytes.Buffer
	n := 0
	base := slog.New(countingHandler{slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo}), &n})
	attrs := []slog.Attr{slog.String("method", "FetchX509SVID"), slog.Int("pid", 42), slog.Uint64("uid", 1000)}
	l := callLog(base, attrs...)
	l.Debug("not enabled", "x", 1)
	if n != 0 {
		t.Fatalf("attributes formatted %d times for a call that logged nothing", n)
	}
	want := slog.New(slog.NewTextHandler(&a, nil)).With("method", "FetchX509SVID", "pid", int32(42), "uid", uint32(1000))
	for _, lg := range []*slog.Logger{want, l} {
		lg.Info("first", "err", "boom")
		lg.With("attestor", "unix").Warn("derived")
		lg.WithGroup("g").Error("grouped", "k", "v")
	}
	strip := func(s string) string {
		var out []byte
		for _, line := range bytes.Split([]byte(s), []byte("\n")) {
			if i := bytes.Index(line, []byte(" level=")); i >= 0 {
				line = line[i:]
			}
			out = append(out, line...)
			out = append(out, '\n')
		}
		return string(out)
	}
	if strip(a.String()) != strip(b.String()) {
		t.Fatalf("callLog wrote\n%s\nWith writes\n%s", b.String(), a.String())
	}
	// Once for the call's attributes, once for the derived logger's.
	if n != 2 {
		t.Fatalf("attributes formatted %d times, want 2", n)
	}
}
