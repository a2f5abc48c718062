package cli

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLoggerAgainstServer changes a real server's log level through the
// CLI: debug lines appear after "logger set -level debug" and stop after
// "logger reset", which returns to the configured level.
func TestLoggerAgainstServer(t *testing.T) {
	var logs syncbuf.Buffer
	// An unauthenticated connection left idle is closed with a debug line.
	s := servertest.Start(t, servertest.Options{Log: &logs, LogLevel: logging.NewLevel(slog.LevelInfo),
		ServerExtra: "connection_limits {\n\t\tunauthenticated_idle_timeout = \"100ms\"\n\t}"})
	idleConn := func() {
		t.Helper()
		conn := s.Dial(t, nil)
		if _, err := bundlev1.NewBundleClient(conn).GetBundle(context.Background(), &bundlev1.GetBundleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	closes := func() int { return strings.Count(logs.String(), `msg="Closed idle connection"`) }
	waitClose := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for closes() < n {
			if time.Now().After(deadline) {
				t.Fatalf("no debug line after logger set -level debug:\n%s", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	code, stdout, stderr := runMain("logger", "get", "-socketPath", s.Socket)
	if code != 0 || stdout != "Logger Level : info\nLaunch Level : info\n\n" {
		t.Fatalf("get: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The TCP connection idles out, silently at info; wait well past its
	// timeout so that its close cannot fall after the level changes.
	idleConn()
	time.Sleep(time.Second)
	if n := closes(); n != 0 {
		t.Fatalf("debug line written at info:\n%s", logs.String())
	}

	code, stdout, stderr = runMain("logger", "set", "-level", "DEBUG", "-socketPath", s.Socket)
	if code != 0 || stdout != "Logger Level : debug\nLaunch Level : info\n\n" {
		t.Fatalf("set: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(logs.String(), `msg="SetLogLevel Called" subsystem=api new_log_level=debug`) {
		t.Fatalf("no SetLogLevel line:\n%s", logs.String())
	}
	idleConn()
	waitClose(1)

	code, stdout, _ = runMain("logger", "reset", "-output", "json", "-socketPath", s.Socket)
	if code != 0 {
		t.Fatalf("reset: exit %d", code)
	}
	requireJSONEq(t, `{"current_level":"INFO","launch_level":"INFO"}`, stdout)
	// Nothing to wait for when the line must not come: wait well past
	// the idle timeout instead.
	before := closes()
	idleConn()
	time.Sleep(time.Second)
	if n := closes(); n != before {
		t.Fatalf("debug lines still written after reset:\n%s", logs.String())
	}

	code, stdout, _ = runMain("logger", "set", "-level", "warn", "-socketPath", s.Socket)
	if code != 0 || stdout != "Logger Level : warning\nLaunch Level : info\n\n" {
		t.Fatalf("set warn: exit %d, %q", code, stdout)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"logger", "set"}, "Error: a value (-level) must be set\n"},
		{[]string{"logger", "set", "-level", "loud"}, "Error: the value \"loud\" is not a valid setting\n"},
	} {
		code, _, stderr := runMain(append(tt.args, "-socketPath", s.Socket)...)
		if code != 1 || stderr != tt.want {
			t.Fatalf("%v: exit %d, stderr %q", tt.args, code, stderr)
		}
	}
	_, err := loggerv1.NewLoggerClient(s.Admin(t)).SetLogLevel(context.Background(), &loggerv1.SetLogLevelRequest{})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "newLevel value cannot be LogLevel_UNSPECIFIED") {
		t.Fatalf("unspecified level: %v", err)
	}
	// The logger API is for the admin socket only, not for admin SVIDs
	// or anyone else over TCP.
	_, err = loggerv1.NewLoggerClient(s.Dial(t, nil)).GetLogger(context.Background(), &loggerv1.GetLoggerRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("GetLogger over TCP: %v", err)
	}
}
