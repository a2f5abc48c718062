package peer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// CheckPIDFD reports whether the process behind pidfd is still running. A
// pidfd turns readable (POLLIN) when its process exits, before the parent
// reaps it; the PID cannot be reused until then, so "not readable" means the
// PID still names this very process. One poll(2) with no timeout is the
// whole check: pidfds and their poll support came in the same release
// (Linux 5.3), the kernel reports readable both for a zombie and for a
// reaped process, and pidfd_send_signal(0), which this check once made too,
// succeeds on a zombie, so it could never find an exit that poll had not.
// The check runs three times in each Workload API call.
func CheckPIDFD(pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("peer: poll pidfd: %w", err)
		}
		if n > 0 {
			if fds[0].Revents&unix.POLLNVAL != 0 {
				return fmt.Errorf("peer: poll pidfd: %w", unix.EBADF)
			}
			if fds[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) != 0 {
				return ErrExited
			}
		}
		return nil
	}
}

func dupCloexec(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("peer: dup pidfd: %w", err)
	}
	return nfd, nil
}

func closeFD(fd int) error {
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("peer: close pidfd: %w", err)
	}
	return nil
}
