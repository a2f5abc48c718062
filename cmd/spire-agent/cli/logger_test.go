package cli

import (
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-hw/spire-hw/agent/admin"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/logging"
)

// noSVID is an agent that has not attested: enough for logger/v1.
type noSVID struct{}

func (noSVID) AgentSVID() *x509svid.SVID    { return nil }
func (noSVID) Bundle() *spiffebundle.Bundle { return nil }
func (noSVID) CountX509SVIDs() int          { return 0 }
func (noSVID) CountJWTSVIDs() int           { return 0 }
func (noSVID) CountSVIDStoreX509SVIDs() int { return 0 }
func (noSVID) LastSync() time.Time          { return time.Time{} }

// startAdmin serves a real admin socket at launch level INFO until the
// test ends.
func startAdmin(t *testing.T) (sock string, logs *syncbuf.Buffer) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cliadm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "private", "admin.sock")
	logs = &syncbuf.Buffer{}
	lv := logging.NewLevel(slog.LevelInfo)
	log, err := logging.NewWriter(logs, lv, "text")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- admin.Serve(ctx, admin.Config{SocketPath: sock, TrustDomain: td, Manager: noSVID{}, LogLevel: lv, Log: log})
	}()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Lstat(sock); err == nil && fi.Mode().Type() == fs.ModeSocket {
			return sock, logs
		}
		if time.Now().After(deadline) {
			t.Fatal("the admin socket did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLoggerCommands: get, set and reset with spire-server's output,
// against a real admin socket whose level they change.
func TestLoggerCommands(t *testing.T) {
	sock, logs := startAdmin(t)
	for _, tt := range []struct {
		args   []string
		stdout string
	}{
		{[]string{"logger", "get"}, "Logger Level : info\nLaunch Level : info\n\n"},
		{[]string{"logger", "set", "-level", "DEBUG"}, "Logger Level : debug\nLaunch Level : info\n\n"},
		{[]string{"logger", "get"}, "Logger Level : debug\nLaunch Level : info\n\n"},
		{[]string{"logger", "set", "-level", "warn"}, "Logger Level : warning\nLaunch Level : info\n\n"},
		{[]string{"logger", "reset"}, "Logger Level : info\nLaunch Level : info\n\n"},
	} {
		code, out, errs := runCLI(t, append(tt.args, "-socketPath", sock)...)
		if code != 0 || out != tt.stdout || errs != "" {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", tt.args, code, out, errs)
		}
	}
	if !strings.Contains(logs.String(), `msg="SetLogLevel Called" subsystem=logger_api new_log_level=debug`) {
		t.Fatalf("no SetLogLevel line:\n%s", logs.String())
	}

	code, out, _ := runCLI(t, "logger", "set", "-level", "trace", "-output", "json", "-socketPath", sock)
	var got map[string]string
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil ||
		!reflect.DeepEqual(got, map[string]string{"current_level": "TRACE", "launch_level": "INFO"}) ||
		out != `{"current_level":"TRACE","launch_level":"INFO"}`+"\n" {
		t.Fatalf("set -output json: exit %d, %q", code, out)
	}
}

func TestLoggerCommandErrors(t *testing.T) {
	sock, _ := startAdmin(t)
	missing := filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"logger", "set", "-socketPath", sock}, "Error: a value (-level) must be set\n"},
		{[]string{"logger", "set", "-level", "loud", "-socketPath", sock}, "Error: the value \"loud\" is not a valid setting\n"},
		{[]string{"logger", "get", "-socketPath", missing}, "Error: error fetching logger: rpc error: code = Unavailable"},
		{[]string{"logger", "get", "-output", "xml"}, `invalid value "xml" for flag -output: bad formatter flag: unknown format "xml"; use pretty or json`},
		{[]string{"logger", "reset", "now"}, "unexpected argument \"now\"\nUsage of logger reset:\n"},
	} {
		code, out, errs := runCLI(t, tt.args...)
		if code != 1 || out != "" || !strings.HasPrefix(errs, tt.stderr) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", tt.args, code, out, errs)
		}
	}
	// Help is the flag usage, then the flag package's line, as the
	// server's admin commands print it.
	code, _, errs := runCLI(t, "logger", "get", "-h")
	if code != 0 || !strings.HasPrefix(errs, "Usage of logger get:\n") || !strings.Contains(errs, `(default "/tmp/spire-agent/private/admin.sock")`) ||
		!strings.HasSuffix(errs, "\nflag: help requested\n") {
		t.Fatalf("logger get -h: exit %d\n%s", code, errs)
	}
}
