package loggerapi

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/logging"
)

// TestLevelsRoundTrip: every SPIRE level maps to a slog level that maps
// back to it, and the CLI's name for it parses back to it.
func TestLevelsRoundTrip(t *testing.T) {
	for l := range types.LogLevel_name {
		lv := types.LogLevel(l)
		sl, ok := SlogLevel(lv)
		if lv == types.LogLevel_UNSPECIFIED {
			if ok {
				t.Fatal("UNSPECIFIED has a slog level")
			}
			continue
		}
		if !ok || APILevel(sl) != lv {
			t.Fatalf("%v -> %v (%v) -> %v", lv, sl, ok, APILevel(sl))
		}
		name, ok := Name(lv)
		if back, ok2 := ParseName(strings.ToUpper(name)); !ok || !ok2 || back != lv {
			t.Fatalf("%v named %q parses to %v", lv, name, back)
		}
	}
	// Levels between SPIRE's show what the next one up shows.
	if APILevel(slog.LevelInfo+1) != types.LogLevel_WARN || APILevel(LevelPanic+100) != types.LogLevel_PANIC {
		t.Fatal("in-between levels misnamed")
	}
	if l, ok := ParseName("warn"); !ok || l != types.LogLevel_WARN {
		t.Fatal("warn is not WARN")
	}
	if _, ok := ParseName("loud"); ok {
		t.Fatal("unknown name parsed")
	}
}

func newService(t *testing.T, launch slog.Level) (*Service, *syncbuf.Buffer, *slog.Logger) {
	t.Helper()
	var buf syncbuf.Buffer
	lv := logging.NewLevel(launch)
	log, err := logging.NewWriter(&buf, lv, "text")
	if err != nil {
		t.Fatal(err)
	}
	return &Service{Level: lv, Log: log.With("subsystem", "logger_api"), Daemon: "agent"}, &buf, log
}

// TestSetAndReset: Set changes the level of every derived logger at once,
// Reset returns to the launch level, and each call logs SPIRE's line.
func TestSetAndReset(t *testing.T) {
	s, buf, root := newService(t, slog.LevelInfo)
	other := root.With("subsystem", "manager")
	got, err := s.Get()
	if err != nil || got.CurrentLevel != types.LogLevel_INFO || got.LaunchLevel != types.LogLevel_INFO {
		t.Fatalf("get: %v %v", got, err)
	}
	other.Debug("hidden before")
	got, err = s.Set(types.LogLevel_TRACE)
	if err != nil || got.CurrentLevel != types.LogLevel_TRACE || got.LaunchLevel != types.LogLevel_INFO {
		t.Fatalf("set: %v %v", got, err)
	}
	other.Log(t.Context(), LevelTrace, "shown trace")
	got, err = s.Reset()
	if err != nil || got.CurrentLevel != types.LogLevel_INFO {
		t.Fatalf("reset: %v %v", got, err)
	}
	other.Debug("hidden after")
	out := buf.String()
	for _, want := range []string{
		`msg="GetLogger Called" subsystem=logger_api`,
		`msg="SetLogLevel Called" subsystem=logger_api new_log_level=trace`,
		`msg="shown trace" subsystem=manager`,
		`msg="ResetLogLevel Called" subsystem=logger_api launch_log_level=info`,
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("no %s in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Fatalf("debug line at info:\n%s", out)
	}
}

func TestRefusals(t *testing.T) {
	s, buf, _ := newService(t, slog.LevelWarn)
	for _, tt := range []struct {
		level types.LogLevel
		msg   string
	}{
		{types.LogLevel_UNSPECIFIED, "newLevel value cannot be LogLevel_UNSPECIFIED"},
		{types.LogLevel(42), "unsupported log level"},
	} {
		_, err := s.Set(tt.level)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.msg) {
			t.Fatalf("Set(%v): %v", tt.level, err)
		}
	}
	if s.Level.Level() != slog.LevelWarn {
		t.Fatal("a refused Set changed the level")
	}
	if !strings.Contains(buf.String(), "level=WARN msg=\"Invalid argument: unsupported log level\"") {
		t.Fatalf("refusal not logged:\n%s", buf.String())
	}
	fixed := &Service{Log: slog.New(slog.DiscardHandler), Daemon: "agent"}
	for name, call := range map[string]func() error{
		"get":   func() error { _, err := fixed.Get(); return err },
		"set":   func() error { _, err := fixed.Set(types.LogLevel_DEBUG); return err },
		"reset": func() error { _, err := fixed.Reset(); return err },
	} {
		if err := call(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "the agent's logger") {
			t.Fatalf("%s without a level: %v", name, err)
		}
	}
}

// FuzzSet: any level value from the network is set or refused with
// InvalidArgument, and the answer always names defined levels.
func FuzzSet(f *testing.F) {
	for _, v := range []int32{0, 1, 3, 7, 8, -1, 1 << 30} {
		f.Add(v)
	}
	s := &Service{Level: logging.NewLevel(slog.LevelInfo), Log: slog.New(slog.DiscardHandler), Daemon: "agent"}
	f.Fuzz(func(t *testing.T, v int32) {
		got, err := s.Set(types.LogLevel(v))
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Set(%d): %v", v, err)
			}
			return
		}
		if _, ok := Name(got.CurrentLevel); !ok || got.CurrentLevel != types.LogLevel(v) {
			t.Fatalf("Set(%d) answered %v", v, got)
		}
	})
}
