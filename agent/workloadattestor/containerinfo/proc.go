package containerinfo

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"golang.org/x/sys/unix"
)

// Read limits: far above what a real process has (a busy Kubernetes node
// has a few thousand mounts of ~200 bytes), low enough that a hostile
// mount namespace cannot make the agent buffer without end.
const (
	maxCgroupBytes    = 1 << 20
	maxMountInfoBytes = 16 << 20
)

// Proc is what a live caller's cgroups say.
type Proc struct {
	// Cgroups are the lines of /proc/<pid>/cgroup.
	Cgroups []Cgroup
	// MountRoots are the roots of the cgroup and cgroup2 mounts in
	// /proc/<pid>/mountinfo. They are read only when no cgroup path names
	// a container, the only case in which Locate consults them, which
	// saves reading a file that can hold thousands of lines on every call.
	MountRoots []string
}

// ReadProc reads the cgroups of process pid through a handle on
// procDir/<pid> (procDir is "/proc" but for tests) and then confirms with
// the caller's pidfd that the process is still alive: the handle is bound
// to whichever process held the PID when it was opened, so a caller that
// exited and whose PID was reused is refused, never read as the new holder.
// Pass pidfd -1 only where no pidfd exists; the check is then skipped.
func ReadProc(procDir string, pid int32, pidfd int) (Proc, error) {
	return readProc(procDir, pid, pidfd, true)
}

// ReadCgroups is ReadProc for a caller that needs only /proc/<pid>/cgroup
// (the systemd attestor): it never reads mountinfo.
func ReadCgroups(procDir string, pid int32, pidfd int) ([]Cgroup, error) {
	p, err := readProc(procDir, pid, pidfd, false)
	return p.Cgroups, err
}

func readProc(procDir string, pid int32, pidfd int, mounts bool) (Proc, error) {
	if pid <= 0 {
		return Proc{}, fmt.Errorf("containerinfo: invalid pid %d", pid)
	}
	dirfd, err := unix.Open(fmt.Sprintf("%s/%d", procDir, pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Proc{}, fmt.Errorf("containerinfo: open /proc/%d: %w", pid, err)
	}
	defer unix.Close(dirfd)

	b, err := readAt(dirfd, "cgroup", maxCgroupBytes)
	if err != nil {
		return Proc{}, fmt.Errorf("containerinfo: read /proc/%d/cgroup: %w", pid, err)
	}
	var p Proc
	// A process that is reaped while the file is read leaves it empty;
	// the pidfd check below then gives the true reason.
	if p.Cgroups, err = ParseCgroups(b); err != nil {
		if cerr := check(pid, pidfd); cerr != nil {
			return Proc{}, cerr
		}
		return Proc{}, fmt.Errorf("containerinfo: /proc/%d/cgroup: %w", pid, err)
	}
	if mounts && !hasContainerID(p.CgroupPaths()) {
		b, err := readAt(dirfd, "mountinfo", maxMountInfoBytes)
		if err != nil {
			return Proc{}, fmt.Errorf("containerinfo: read /proc/%d/mountinfo: %w", pid, err)
		}
		mounts, err := parseMountInfo(b)
		if err != nil {
			if cerr := check(pid, pidfd); cerr != nil {
				return Proc{}, cerr
			}
			return Proc{}, fmt.Errorf("containerinfo: /proc/%d/mountinfo: %w", pid, err)
		}
		for _, m := range mounts {
			if m.fsType == "cgroup" || m.fsType == "cgroup2" {
				p.MountRoots = append(p.MountRoots, m.root)
			}
		}
	}
	if err := check(pid, pidfd); err != nil {
		return Proc{}, err
	}
	return p, nil
}

// check confirms that the caller is still the process behind pidfd.
func check(pid int32, pidfd int) error {
	if pidfd < 0 {
		return nil
	}
	if err := peer.CheckPIDFD(pidfd); err != nil {
		return fmt.Errorf("containerinfo: caller pid %d: %w", pid, err)
	}
	return nil
}

// CgroupPaths returns the path of every cgroup line, in file order.
func (p Proc) CgroupPaths() []string {
	out := make([]string, len(p.Cgroups))
	for i, c := range p.Cgroups {
		out[i] = c.Path
	}
	return out
}

// Locate applies SPIRE's new container locator: the cgroup paths, which
// the kernel writes and no workload can forge, and only when they name no
// container (a workload in the agent's own cgroup namespace root sees
// "0::/") the cgroup mount roots, as SPIRE does since v1.15.2 (v1.13 read
// mountinfo first, which let a workload that can mount pose as another
// container). An Info
// without a ContainerID means the process is in no container that these
// rules recognise.
func (p Proc) Locate(wantPodUID bool) (Info, error) {
	info, err := Extract(p.CgroupPaths(), wantPodUID)
	if err != nil || info.ContainerID != "" {
		return info, err
	}
	return Extract(p.MountRoots, wantPodUID)
}

func readAt(dirfd int, name string, limit int64) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.New("larger than " + fmt.Sprint(limit) + " bytes")
	}
	return b, nil
}
