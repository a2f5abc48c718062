package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/childproc"
)

// proc is a long-running server or agent. Its output goes to a file in its
// directory, so that a run with 10,000 entries does not hold logs in
// memory, and the tail is quoted when something fails.
type proc struct {
	*childproc.Proc
	name string
	log  string
}

// startProc runs bin in dir until Stop is called.
func startProc(dir, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, filepath.Base(bin)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	cp, err := childproc.Start(dir, f, func() { f.Close() }, bin, args...)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("compare: %w", err)
	}
	return &proc{Proc: cp, name: filepath.Base(bin), log: logPath}, nil
}

// exited returns an error naming the exit status once the process ended.
func (p *proc) exited() error {
	if st := p.State(); st != nil {
		return fmt.Errorf("compare: %s exited (%v):\n%s", p.name, st, p.tail())
	}
	return nil
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// runCLI runs bin to completion and returns its stdout.
func runCLI(ctx context.Context, dir, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = childproc.Attr()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("compare: %s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(out.String()+errb.String()))
	}
	return out.String(), nil
}

// poll calls f every interval until it succeeds, ctx ends or timeout
// passes; the last error explains a timeout.
func poll(ctx context.Context, timeout, interval time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("compare: timed out waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("compare: %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("compare: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// rss reads a process's resident and peak resident memory in bytes.
func rss(pid int) (cur, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("compare: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(l, "VmRSS: %d kB", &kb); err == nil {
			cur = kb << 10
		}
		if _, err := fmt.Sscanf(l, "VmHWM: %d kB", &kb); err == nil {
			peak = kb << 10
		}
	}
	if cur == 0 {
		return 0, 0, errors.New("compare: no VmRSS in /proc status")
	}
	return cur, peak, nil
}

// group tracks every process of a run so that an interrupted run stops
// them all, whichever scenario was in progress.
type group struct {
	mu    sync.Mutex
	procs []*proc
}

func (g *group) add(p *proc) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.procs = append(g.procs, p)
}

// stopAll stops the tracked processes, newest first (agents before their
// servers).
func (g *group) stopAll() {
	g.mu.Lock()
	ps := g.procs
	g.procs = nil
	g.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].Stop()
	}
}
