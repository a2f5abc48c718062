package peer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// CheckPIDFD reports whether the process behind pidfd is still running. A
// pidfd turns readable (POLLIN) when its process exits, before the parent
// reaps it; the PID cannot be reused until then, so "not readable" means the
// PID still names this very process. pidfd_send_signal with signal 0 backs
// that up for kernels that report exit only through ESRCH.
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
			if fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0 {
				return ErrExited
			}
		}
		break
	}
	switch err := unix.PidfdSendSignal(pidfd, 0, nil, 0); {
	case err == nil, errors.Is(err, unix.EPERM):
		// EPERM: it exists, we may just not signal it.
		return nil
	case errors.Is(err, unix.ESRCH):
		return ErrExited
	default:
		return fmt.Errorf("peer: pidfd_send_signal: %w", err)
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
