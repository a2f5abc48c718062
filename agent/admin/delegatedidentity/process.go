package delegatedidentity

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/agent/peer"
)

// process is a workload named by PID, pinned by a pidfd from the moment
// the request arrives: its PID cannot name another process while the
// pidfd shows this one alive. The fd is non-blocking and held in an
// os.File so that waiting for the exit uses the runtime's poller, not a
// thread.
type process struct {
	pid int32
	// raw is the pidfd's number, owned by file. File.Fd would turn the fd
	// blocking and out of the poller, so the number is kept here.
	raw  int
	file *os.File
}

// openProcess pins pid. It fails (ESRCH) when no process has that PID.
func openProcess(pid int32) (*process, error) {
	fd, err := unix.PidfdOpen(int(pid), unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return &process{pid: pid, raw: fd, file: os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))}, nil
}

// fd is the pidfd, valid until close (or exited's stop).
func (p *process) fd() int { return p.raw }

// exited returns a channel closed once the process has exited, and stop,
// which ends the wait (and must be called). The pidfd turns readable when
// its process exits.
func (p *process) exited() (<-chan struct{}, func()) {
	done := make(chan struct{})
	rc, err := p.file.SyscallConn()
	if err != nil {
		// A pidfd the runtime cannot poll: fall back to never reporting,
		// which is SPIRE's behaviour (the delegate watches its PIDs).
		return done, func() {}
	}
	stopped := make(chan struct{})
	go func() {
		err := rc.Read(func(fd uintptr) bool {
			return errors.Is(peer.CheckPIDFD(int(fd)), peer.ErrExited)
		})
		if err == nil {
			close(done)
		}
		close(stopped)
	}()
	return done, func() {
		// Closing the file wakes the poller's wait with an error.
		p.file.Close()
		<-stopped
	}
}

// close releases the pidfd.
func (p *process) close() { p.file.Close() }

func closeFD(fd int) { _ = unix.Close(fd) }

// alive reports whether the process still runs (peer.ErrExited if not).
func (p *process) alive() error { return peer.CheckPIDFD(p.raw) }
