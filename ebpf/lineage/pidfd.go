package lineage

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Live is what can change in a process without an exec: its credentials
// (setuid) and its cgroup (migration).
type Live struct {
	UID, EUID, GID, EGID uint32
	CgroupID             uint64
}

// pidfdInfo is struct pidfd_info of linux/pidfd.h, version 0 (64 bytes).
type pidfdInfo struct {
	Mask                                             uint64
	CgroupID                                         uint64
	PID, TGID, PPID                                  uint32
	RUID, RGID, EUID, EGID, SUID, SGID, FSUID, FSGID uint32
	ExitCode                                         int32
	CoredumpMask                                     uint32
	Spare                                            uint32
}

const (
	pidfdInfoCreds    = 1 << 1
	pidfdInfoCgroupID = 1 << 2
	// pidfdGetInfo is _IOWR(0xFF, 11, struct pidfd_info).
	pidfdGetInfo = 3<<30 | uint(unsafe.Sizeof(pidfdInfo{}))<<16 | 0xFF<<8 | 11
)

// noPidfdInfo is set once the kernel turned PIDFD_GET_INFO down (before 6.13).
var noPidfdInfo atomic.Bool

// LiveOf reads the current credentials and cgroup of the process behind
// pidfd in one ioctl (PIDFD_GET_INFO, Linux 6.13). On older kernels it reads
// /proc/<pid>/status and /proc/<pid>/cgroup, bound to the pidfd. It returns
// ErrExited if the process has exited.
func LiveOf(pid int32, pidfd int) (Live, error) {
	if !noPidfdInfo.Load() {
		info := pidfdInfo{Mask: pidfdInfoCreds | pidfdInfoCgroupID}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(pidfd), uintptr(pidfdGetInfo), uintptr(unsafe.Pointer(&info)))
		switch {
		case errno == 0 && info.Mask&pidfdInfoCreds != 0:
			l := Live{UID: info.RUID, EUID: info.EUID, GID: info.RGID, EGID: info.EGID}
			if info.Mask&pidfdInfoCgroupID != 0 {
				l.CgroupID = info.CgroupID
			}
			return l, nil
		case errno == unix.ESRCH:
			return Live{}, ErrExited
		case errno == unix.ENOTTY || errno == unix.EINVAL || errno == unix.EOPNOTSUPP || errno == 0:
			noPidfdInfo.Store(true)
		default:
			return Live{}, fmt.Errorf("lineage: PIDFD_GET_INFO: %w", errno)
		}
	}
	p, err := ReadProc(pid, pidfd)
	if err != nil {
		return Live{}, err
	}
	return Live{UID: p.UID, EUID: p.EUID, GID: p.GID, EGID: p.EGID, CgroupID: p.CgroupID}, nil
}
