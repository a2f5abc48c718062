package k8s

import (
	"fmt"
	"strings"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"golang.org/x/sys/unix"
)

// The fast path: a caller's cgroup v2 ID, which the kernel reports for the
// pidfd's own process (never a later holder of its PID) in one ioctl
// (PIDFD_GET_INFO, Linux 6.13; read through ebpf/lineage.LiveOf), names
// the directory of its cgroup. Cgroup v2 directories cannot be renamed and
// their IDs are not reused while the system runs, so once the directory
// with an ID has been seen to be a pod container's, every later caller in
// it is in that container, without reading /proc or matching patterns.
// The docker attestor takes the same path.

// cgroup2Root is where the cgroup v2 hierarchy is mounted, "" if at
// neither of the places systemd and container runtimes mount it.
func cgroup2Root() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

// pidfdInfoKernel reports whether the kernel has PIDFD_GET_INFO (6.13 and
// later): before it, LiveOf would read /proc, the very cost the fast path
// exists to save.
func pidfdInfoKernel() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var major, minor int
	release := strings.TrimRight(string(u.Release[:]), "\x00")
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 6 || major == 6 && minor >= 13
}

// learnCgroup remembers that cgroup v2 ID cgid is the pod container info
// names, if the caller's cgroup v2 path alone names that very pod and
// container and the directory at that path is the one with that ID (so a
// caller moved between the ioctl and the /proc read teaches nothing).
func (a *Attestor) learnCgroup(cgid uint64, proc containerinfo.Proc, info containerinfo.Info) {
	if cgid == 0 || a.cgroup2 == "" || info.ContainerID == "" {
		return
	}
	for _, cg := range proc.Cgroups {
		if cg.HierarchyID != "0" || len(cg.Controllers) != 0 {
			continue
		}
		got, err := containerinfo.Extract([]string{cg.Path}, true)
		if err != nil || got != info {
			return
		}
		var st unix.Stat_t
		if unix.Stat(a.cgroup2+cg.Path, &st) != nil || st.Ino != cgid {
			return
		}
		a.located.learn(cgid, info)
		return
	}
}
