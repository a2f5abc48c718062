// Package workloadattestortest is the conformance suite every workload
// attestor must pass: the built-ins (unix, lineage) and external SDK plugins
// behind agent/workloadattestor/external alike, so the Workload API can
// treat them the same.
//
// The suite attests real processes through real pidfds: the test process
// itself, and a child that has exited and been reaped, whose PID another
// process may already hold. It checks what the Workload API relies on:
// selectors of the caller and only the caller, typed by the attestor; a
// refusal (never someone else's selectors) for a caller that is gone; a
// prompt return when the caller gives up; and no data race between
// concurrent callers (run it with -race).
package workloadattestortest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

// returnBound is how long any one Attest may take before the suite calls it
// hung. It is generous on purpose: it catches a call that never returns,
// not a slow one on a loaded machine.
const returnBound = 10 * time.Second

// Concurrency of the race check: goroutines, and calls each makes.
const (
	concurrentCallers = 8
	callsPerCaller    = 4
)

// Option adjusts what the suite expects of an attestor.
type Option func(*options)

type options struct {
	types map[string]bool
}

// AlsoSelectorTypes allows selectors of these types besides the attestor's
// own, for an attestor that emits another attestor's selectors too (lineage
// emits the unix ones).
func AlsoSelectorTypes(types ...string) Option {
	return func(o *options) {
		for _, t := range types {
			o.types[t] = true
		}
	}
}

// Run runs the suite. name is the type of the selectors the attestor emits
// (its plugin name). newAttestor must return a ready attestor each time it
// is called; it may register cleanups on the t it is given.
func Run(t *testing.T, name string, newAttestor func(t *testing.T) workloadapi.Attestor, opts ...Option) {
	t.Helper()
	o := options{types: map[string]bool{name: true}}
	for _, opt := range opts {
		opt(&o)
	}
	s := &suite{name: name, opts: o}
	tests := []struct {
		name string
		run  func(t *testing.T, a workloadapi.Attestor)
	}{
		{"OwnProcess", s.testOwnProcess},
		{"ExitedProcess", s.testExitedProcess},
		{"CanceledContext", s.testCanceled},
		{"Concurrent", s.testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newAttestor(t)) })
	}
}

type suite struct {
	name string
	opts options
}

// result is one Attest call's outcome.
type result struct {
	sel []*types.Selector
	err error
}

// attest calls a.Attest and fails t if it does not return within the
// bound. The goroutine left behind by a hung call ends with the test
// binary; the failure says which call hung.
func attest(t *testing.T, ctx context.Context, a workloadapi.Attestor, pid int32, pidfd int) result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		sel, err := a.Attest(ctx, pid, pidfd)
		done <- result{sel, err}
	}()
	timer := time.NewTimer(returnBound)
	defer timer.Stop()
	select {
	case r := <-done:
		return r
	case <-timer.C:
		t.Fatalf("Attest(pid %d) did not return within %v", pid, returnBound)
		return result{}
	}
}

// ownPIDFD opens a pidfd on the test process itself.
func ownPIDFD(t *testing.T) (int32, int) {
	t.Helper()
	fd, err := sysunix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("workloadattestortest: pidfd_open unavailable: %v", err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	return int32(os.Getpid()), fd
}

// checkSelectors fails t unless sel is a non-empty list of well-formed
// selectors of the allowed types, at least one of the attestor's own.
func (s *suite) checkSelectors(t *testing.T, sel []*types.Selector) {
	t.Helper()
	if len(sel) == 0 {
		t.Fatal("no selectors for a live caller")
	}
	own := false
	for i, sl := range sel {
		switch {
		case sl == nil:
			t.Errorf("selector %d is nil", i)
		case !s.opts.types[sl.Type]:
			t.Errorf("selector %d %q:%q: type not among %q", i, sl.Type, sl.Value, s.allowed())
		case sl.Value == "":
			t.Errorf("selector %d of type %q has an empty value", i, sl.Type)
		case sl.Type == s.name:
			own = true
		}
	}
	if !own {
		t.Errorf("no selector of the attestor's own type %q among %d", s.name, len(sel))
	}
}

func (s *suite) allowed() []string {
	var out []string
	for k := range s.opts.types {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// testOwnProcess attests the test process, which is alive for the whole
// call.
func (s *suite) testOwnProcess(t *testing.T, a workloadapi.Attestor) {
	pid, fd := ownPIDFD(t)
	r := attest(t, context.Background(), a, pid, fd)
	if r.err != nil {
		t.Fatalf("Attest(own pid %d): %v", pid, r.err)
	}
	s.checkSelectors(t, r.sel)
}

// testExitedProcess attests a child that has exited and been reaped, with
// a pidfd opened while it still existed: its PID is free for any process to
// take, so any selectors would describe a stranger.
func (s *suite) testExitedProcess(t *testing.T, a workloadapi.Attestor) {
	pid, fd := exitedChild(t)
	r := attest(t, context.Background(), a, pid, fd)
	if r.err == nil && len(r.sel) != 0 {
		t.Fatalf("Attest(exited pid %d) = %d selectors (%s), want an error or none", pid, len(r.sel), render(r.sel))
	}
}

// exitedChild starts a child, opens a pidfd on it (it is at worst a zombie
// then, so the PID is still its own), then reaps it.
func exitedChild(t *testing.T) (int32, int) {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	fd, err := sysunix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		_ = cmd.Wait()
		t.Skipf("workloadattestortest: pidfd_open unavailable: %v", err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	return int32(cmd.Process.Pid), fd
}

// testCanceled calls with a context that ended before the call: a caller
// that hung up must not keep the attestor busy.
func (s *suite) testCanceled(t *testing.T, a workloadapi.Attestor) {
	pid, fd := ownPIDFD(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := attest(t, ctx, a, pid, fd)
	if r.err == nil {
		t.Fatalf("Attest with a cancelled context = %d selectors, want an error", len(r.sel))
	}
}

// testConcurrent attests the test process from many goroutines at once;
// every call must give the same answer as a lone one. -race finds shared
// state the attestor forgot to guard.
func (s *suite) testConcurrent(t *testing.T, a workloadapi.Attestor) {
	pid, fd := ownPIDFD(t)
	first := attest(t, context.Background(), a, pid, fd)
	if first.err != nil {
		t.Fatalf("Attest(own pid %d): %v", pid, first.err)
	}
	s.checkSelectors(t, first.sel)
	want := render(first.sel)

	var wg sync.WaitGroup
	errs := make(chan error, concurrentCallers*callsPerCaller)
	for range concurrentCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range callsPerCaller {
				ctx, cancel := context.WithTimeout(context.Background(), returnBound)
				sel, err := a.Attest(ctx, pid, fd)
				cancel()
				switch {
				case err != nil:
					errs <- err
				case render(sel) != want:
					errs <- fmt.Errorf("selectors %s, want %s", render(sel), want)
				}
			}
		}()
	}
	// Each call is bounded by its context; an attestor that ignores it is
	// caught here rather than by the test binary's timeout.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(callsPerCaller * returnBound)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("concurrent Attest calls did not return within %v", callsPerCaller*returnBound)
	}
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Attest: %v", err)
	}
}

// render is a selector list as one sorted string, to compare answers
// whatever their order.
func render(sel []*types.Selector) string {
	out := make([]string, 0, len(sel))
	for _, s := range sel {
		out = append(out, s.GetType()+":"+s.GetValue())
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}
