package logging

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

func TestLiveLevel(t *testing.T) {
	var buf syncbuf.Buffer
	lv := NewLevel(slog.LevelInfo)
	root, err := NewWriter(&buf, lv, "text")
	if err != nil {
		t.Fatal(err)
	}
	log := root.With("subsystem", "api").WithGroup("g")
	if LevelOf(log) != lv || LevelOf(root) != lv {
		t.Fatal("LevelOf does not find the level of a derived logger")
	}
	if LevelOf(slog.New(slog.NewTextHandler(&buf, nil))) != nil || LevelOf(nil) != nil {
		t.Fatal("LevelOf found a level in a logger not made here")
	}
	log.Debug("hidden one")
	lv.Set(slog.LevelDebug)
	log.Debug("shown")
	if lv.Level() != slog.LevelDebug || lv.Launch() != slog.LevelInfo {
		t.Fatalf("level %v launch %v", lv.Level(), lv.Launch())
	}
	lv.Reset()
	log.Debug("hidden two")
	log.Info("info")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "msg=shown subsystem=api") || !strings.Contains(out, "msg=info") {
		t.Fatalf("log:\n%s", out)
	}
	if _, err := NewWriter(&buf, lv, "xml"); err == nil {
		t.Fatal("unknown format accepted")
	}
}
