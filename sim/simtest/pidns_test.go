package simtest

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A PID held by a live task is reported as taken before anything is
// written or started, so callers know to start over.
func TestStartWithPIDTaken(t *testing.T) {
	started := false
	_, err := StartWithPID(os.Getpid(), func() *exec.Cmd {
		started = true
		return exec.Command("true")
	})
	if !errors.Is(err, ErrPIDTaken) {
		t.Fatalf("got %v, want ErrPIDTaken", err)
	}
	if !strings.Contains(err.Error(), "thread group") {
		t.Fatalf("error does not say who holds the PID: %v", err)
	}
	if started {
		t.Fatal("a command was started for a taken PID")
	}
}
