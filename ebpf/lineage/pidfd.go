package lineage

import (
	"errors"
	"fmt"

	"github.com/spiffe-hw/spire-hw/internal/pidfdinfo"
)

// Live is what can change in a process without an exec: its credentials
// (setuid) and its cgroup (migration).
type Live struct {
	UID, EUID, GID, EGID uint32
	CgroupID             uint64
}

// LiveOf reads the current credentials and cgroup of the process behind
// pidfd in one ioctl (PIDFD_GET_INFO, Linux 6.13). On older kernels it reads
// /proc/<pid>/status and /proc/<pid>/cgroup, bound to the pidfd. It returns
// ErrExited if the process has exited.
func LiveOf(pid int32, pidfd int) (Live, error) {
	info, err := pidfdinfo.Get(pidfd, pidfdinfo.InfoCgroupID)
	switch {
	case err == nil && info.Mask&pidfdinfo.InfoCreds != 0:
		l := Live{UID: info.RUID, EUID: info.EUID, GID: info.RGID, EGID: info.EGID}
		if info.Mask&pidfdinfo.InfoCgroupID != 0 {
			l.CgroupID = info.CgroupID
		}
		return l, nil
	case errors.Is(err, pidfdinfo.ErrExited):
		return Live{}, ErrExited
	case err != nil && !errors.Is(err, pidfdinfo.ErrUnsupported):
		return Live{}, fmt.Errorf("lineage: %w", err)
	}
	// No ioctl, or (never seen) one that leaves the credentials out.
	p, err := ReadProc(pid, pidfd)
	if err != nil {
		return Live{}, err
	}
	return Live{UID: p.UID, EUID: p.EUID, GID: p.GID, EGID: p.EGID, CgroupID: p.CgroupID}, nil
}
