package childproc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

// Stop ends the child and what it started (the whole process group), and
// the exit state, output and onExit are there afterwards. The background
// sleep ignores SIGINT, as a non-interactive shell arranges, so this also
// covers the kill after the timeout.
func TestStopEndsTheProcessGroup(t *testing.T) {
	defer func(d time.Duration) { stopTimeout = d }(stopTimeout)
	stopTimeout = 300 * time.Millisecond
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	var out syncbuf.Buffer
	exited := make(chan struct{})
	p, err := Start(dir, &out, func() { close(exited) }, "/bin/sh", "-c", "sleep 60 & echo $! > "+pidFile+"; echo started; wait")
	if err != nil {
		t.Fatal(err)
	}
	if p.State() != nil {
		t.Fatal("State is set while the process runs")
	}
	var grandchild int
	deadline := time.Now().Add(10 * time.Second)
	for grandchild == 0 && time.Now().Before(deadline) {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if grandchild == 0 {
		t.Fatal("the child did not start its own child")
	}
	p.Stop()
	select {
	case <-exited:
	default:
		t.Fatal("onExit had not run when Stop returned")
	}
	if p.State() == nil || p.State().Success() {
		t.Fatalf("State = %v, want an interrupted process", p.State())
	}
	if !strings.Contains(out.String(), "started") {
		t.Fatalf("output %q lacks the child's output", out.String())
	}
	deadline = time.Now().Add(5 * time.Second)
	for syscall.Kill(grandchild, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived Stop", grandchild)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Stop() // a second Stop returns at once
}

func TestStartReportsAMissingBinary(t *testing.T) {
	if _, err := Start(t.TempDir(), os.Stderr, nil, "/nonexistent/daemon"); err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
}

// A child that honours the interrupt ends without waiting for the kill.
func TestStopInterrupts(t *testing.T) {
	p, err := Start(t.TempDir(), os.Stderr, nil, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	if st := p.State(); st == nil || st.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
		t.Fatalf("State = %v, want ended by SIGINT, not killed", st)
	}
}
