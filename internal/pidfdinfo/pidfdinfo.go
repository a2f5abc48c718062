// Package pidfdinfo asks the kernel about the process behind a pidfd with one
// ioctl, PIDFD_GET_INFO (Linux 6.13): its credentials and its cgroup v2 ID
// at this moment. The answer is always about the pidfd's own process, never
// about a later holder of its PID, which is what makes it safe to attest
// by. It is the one place the ioctl and its struct are spelt out, for
// ebpf/lineage and for the container attestors' cgroup ID fast path.
//
// The ioctl also answers for a zombie (an exited process not yet reaped);
// a caller that must know the process still runs checks the pidfd's
// liveness as well (agent/peer.CheckPIDFD).
package pidfdinfo

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Info is struct pidfd_info of linux/pidfd.h in its first version
// (PIDFD_INFO_SIZE_VER0, 64 bytes), which every kernel with the ioctl
// takes; later versions only append fields. Mask says which of the others
// the kernel filled in.
type Info struct {
	Mask                                             uint64
	CgroupID                                         uint64
	PID, TGID, PPID                                  uint32
	RUID, RGID, EUID, EGID, SUID, SGID, FSUID, FSGID uint32
	// ExitCode is spare before Linux 6.15, and set there only when
	// asked for with PIDFD_INFO_EXIT, which nothing here does.
	ExitCode int32
}

// Bits of Info.Mask (PIDFD_INFO_*).
const (
	InfoPID      = 1 << 0
	InfoCreds    = 1 << 1
	InfoCgroupID = 1 << 2
)

// getInfo is PIDFD_GET_INFO, _IOWR(0xFF, 11, struct pidfd_info).
const getInfo = 3<<30 | uint(unsafe.Sizeof(Info{}))<<16 | 0xFF<<8 | 11

// ErrExited is returned for a pidfd whose process has exited and been
// reaped.
var ErrExited = errors.New("pidfdinfo: process has exited")

// ErrUnsupported is returned where the kernel has no PIDFD_GET_INFO
// (before Linux 6.13).
var ErrUnsupported = errors.New("pidfdinfo: PIDFD_GET_INFO not supported by this kernel (Linux 6.13 or later)")

// unsupported is set once the kernel is known to lack the ioctl, so that
// later calls, on every attestation, skip a system call that cannot
// succeed.
var (
	unsupported atomic.Bool
	probeOnce   sync.Once
)

// Get returns what the kernel says about the process behind fd. mask
// asks for optional fields (InfoCgroupID); credentials and PIDs come
// always. It returns ErrExited once the process has been reaped, and
// ErrUnsupported on kernels without the ioctl, from then on without asking
// again.
func Get(fd int, mask uint64) (Info, error) {
	if unsupported.Load() {
		return Info{}, ErrUnsupported
	}
	info := Info{Mask: mask}
	switch errno := ioctl(fd, &info); errno {
	case 0:
		return info, nil
	case unix.ESRCH:
		return Info{}, ErrExited
	case unix.ENOTTY, unix.EINVAL, unix.EOPNOTSUPP:
		// Also what a kernel with the ioctl says of an fd that is not a
		// pidfd: only a refusal for this process's own pidfd turns the
		// ioctl off for good.
		if !Supported() {
			return Info{}, ErrUnsupported
		}
		return Info{}, fmt.Errorf("pidfdinfo: PIDFD_GET_INFO: %w", errno)
	default:
		return Info{}, fmt.Errorf("pidfdinfo: PIDFD_GET_INFO: %w", errno)
	}
}

// Supported reports whether this kernel has PIDFD_GET_INFO. The first call
// asks it about this process's own pidfd.
func Supported() bool {
	probeOnce.Do(func() {
		fd, err := unix.PidfdOpen(unix.Getpid(), 0)
		if err != nil {
			// No pidfds at all (before Linux 5.3).
			unsupported.Store(true)
			return
		}
		defer unix.Close(fd)
		var info Info
		switch ioctl(fd, &info) {
		case unix.ENOTTY, unix.EINVAL, unix.EOPNOTSUPP:
			unsupported.Store(true)
		}
	})
	return !unsupported.Load()
}

func ioctl(fd int, info *Info) unix.Errno {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(getInfo), uintptr(unsafe.Pointer(info)))
	return errno
}
