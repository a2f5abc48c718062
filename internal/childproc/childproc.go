// Package childproc runs the daemons that the end-to-end tests and the
// benchmark harness drive. Each child gets its own process group, so that
// stopping it also stops whatever it started and a terminal's Ctrl-C reaches
// only the parent, and the kernel kills it if the parent dies without
// cleaning up (a test timeout runs no cleanups).
package childproc

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Attr is the process attributes every child gets: its own process group,
// killed with its parent.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// stopTimeout is how long Stop waits after the interrupt before killing.
var stopTimeout = 10 * time.Second

// Proc is a running child.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs bin with args in dir, its stdout and stderr to out. onExit,
// when not nil, runs once the process has ended and before Done closes
// (to close a log file, say).
func Start(dir string, out io.Writer, onExit func(), bin string, args ...string) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = Attr()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the state is read through State
		if onExit != nil {
			onExit()
		}
		close(p.done)
	}()
	return p, nil
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// State is the exit state, or nil while the process runs.
func (p *Proc) State() *os.ProcessState {
	select {
	case <-p.done:
		return p.cmd.ProcessState
	default:
		return nil
	}
}

// Stop interrupts the process group and kills it if it lingers past
// the stop timeout (10 s); it returns once the process has ended.
func (p *Proc) Stop() {
	if p.State() != nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGINT) // it may have just exited
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}
