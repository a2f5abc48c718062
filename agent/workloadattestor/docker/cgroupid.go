package docker

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	sysunix "golang.org/x/sys/unix"
)

// The fast path: a caller's cgroup v2 ID, read from its pidfd with one
// ioctl (PIDFD_GET_INFO, Linux 6.13), names the directory of its cgroup;
// cgroup v2 directories cannot be renamed and their IDs are not reused
// while the system runs, so once the directory with that ID has been seen
// to be a container's, every later caller in it is in that container
// without reading /proc. ebpf/lineage.LiveOf reads the same ioctl but falls
// back to reading /proc on older kernels, which here would only add to the
// read this path exists to skip.

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
	pidfdInfoCgroupID = 1 << 2
	// pidfdGetInfo is _IOWR(0xFF, 11, struct pidfd_info).
	pidfdGetInfo = 3<<30 | uint(unsafe.Sizeof(pidfdInfo{}))<<16 | 0xFF<<8 | 11
)

// noPidfdInfo is set once the kernel turned PIDFD_GET_INFO down.
var noPidfdInfo atomic.Bool

// cgroupIDOf returns the cgroup v2 ID of the process behind pidfd (0 where
// the kernel cannot say), or exited if the process is gone: the ioctl
// answers for the pidfd's own process, never for a later holder of its PID.
func cgroupIDOf(pidfd int) (id uint64, exited bool) {
	if noPidfdInfo.Load() {
		return 0, false
	}
	info := pidfdInfo{Mask: pidfdInfoCgroupID}
	_, _, errno := sysunix.Syscall(sysunix.SYS_IOCTL, uintptr(pidfd), uintptr(pidfdGetInfo), uintptr(unsafe.Pointer(&info)))
	switch {
	case errno == sysunix.ESRCH:
		return 0, true
	case errno == sysunix.ENOTTY || errno == sysunix.EINVAL || errno == sysunix.EOPNOTSUPP:
		noPidfdInfo.Store(true)
		return 0, false
	case errno != 0 || info.Mask&pidfdInfoCgroupID == 0:
		return 0, false
	}
	return info.CgroupID, false
}

// cgroup2Mount returns where this process sees the root of the cgroup v2
// hierarchy, "" if nowhere.
func cgroup2Mount(mountinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		// Escaped mount points (octal \040 for a space) are passed over
		// rather than unescaped: cgroup mounts do not have them.
		if len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && f[3] == "/" && !strings.Contains(f[4], `\`) {
			return f[4]
		}
	}
	return ""
}

func readCgroup2Mount() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	return cgroup2Mount(b)
}

// learnCgroup remembers that cgroup v2 ID cgid is container id's, if the
// caller's cgroup v2 path names that container and the directory at that
// path is the one with that ID (so a caller moved between the ioctl and
// the /proc read teaches nothing wrong).
func (a *Attestor) learnCgroup(cgid uint64, proc containerinfo.Proc, id string) {
	if cgid == 0 || a.cgroup2 == "" {
		return
	}
	for _, cg := range proc.Cgroups {
		if cg.HierarchyID != "0" || len(cg.Controllers) != 0 {
			continue
		}
		info, err := containerinfo.Extract([]string{cg.Path}, false)
		if err != nil || info.ContainerID != id {
			return
		}
		var st sysunix.Stat_t
		if sysunix.Stat(a.cgroup2+cg.Path, &st) != nil || st.Ino != cgid {
			return
		}
		a.locMu.Lock()
		if len(a.byCgroup) >= maxLocated {
			clear(a.byCgroup)
		}
		a.byCgroup[cgid] = id
		a.locMu.Unlock()
		return
	}
}
