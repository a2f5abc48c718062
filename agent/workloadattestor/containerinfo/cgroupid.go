package containerinfo

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/internal/pidfdinfo"
	"golang.org/x/sys/unix"
)

// The fast path both container attestors take: a caller's cgroup v2 ID,
// which the kernel reports for the pidfd's own process (never a later
// holder of its PID) in one ioctl, names the directory of its cgroup.
// Cgroup v2 directories cannot be renamed and their IDs are not reused
// while the system runs, so once the directory with an ID has been seen to
// be a container's, every later caller in it is in that container, without
// reading /proc or matching patterns.

// maxIndexed bounds a CgroupIndex: far more cgroups than a node runs
// containers; when full it starts over rather than track use.
const maxIndexed = 4096

// CgroupIndex maps cgroup v2 IDs known to be containers' cgroups to what
// Proc.Locate said of them. It is safe for concurrent use. A nil
// *CgroupIndex knows nothing and learns nothing, so an attestor whose fast
// path cannot run keeps the nil one and calls it all the same.
type CgroupIndex struct {
	// root is where the cgroup v2 hierarchy is mounted.
	root       string
	wantPodUID bool
	// max overrides maxIndexed (for tests).
	max int

	mu sync.Mutex
	m  map[uint64]Info
}

// NewCgroupIndex returns an index for an attestor that locates callers
// with Proc.Locate(wantPodUID). Where the fast path cannot run it returns
// nil and says why: a kernel without PIDFD_GET_INFO (before Linux 6.13),
// where finding the cgroup ID would cost the /proc read the index exists
// to save, or no cgroup v2 hierarchy mounted.
func NewCgroupIndex(wantPodUID bool) (*CgroupIndex, error) {
	if !pidfdinfo.Supported() {
		return nil, fmt.Errorf("containerinfo: cgroup ID index off: %w", pidfdinfo.ErrUnsupported)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("containerinfo: cgroup ID index off: %w", err)
	}
	root, err := cgroup2Root(b)
	if err != nil {
		return nil, fmt.Errorf("containerinfo: cgroup ID index off: %w", err)
	}
	return &CgroupIndex{root: root, wantPodUID: wantPodUID}, nil
}

// cgroup2Root returns where this process sees the root of the cgroup v2
// hierarchy mounted. A mount of a subtree (a bind, or one made inside
// another cgroup namespace) would put a cgroup's path somewhere else, so
// only the whole hierarchy counts.
func cgroup2Root(mountinfo []byte) (string, error) {
	ms, err := parseMountInfo(mountinfo)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.fsType == "cgroup2" && m.root == "/" {
			return m.point, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy mounted")
}

// Lookup returns what is known of the cgroup the process behind pidfd is
// in at this moment: Info with a ContainerID if the index has learnt that
// cgroup and the process still runs. cgid is that cgroup's ID, to hand to
// Learn after locating the caller the slow way (0 where the kernel cannot
// say). A process that has exited is an error wrapping peer.ErrExited.
func (x *CgroupIndex) Lookup(pidfd int) (info Info, cgid uint64, err error) {
	if x == nil || pidfd < 0 {
		return Info{}, 0, nil
	}
	pi, err := pidfdinfo.Get(pidfd, pidfdinfo.InfoCgroupID)
	switch {
	case errors.Is(err, pidfdinfo.ErrExited):
		return Info{}, 0, fmt.Errorf("containerinfo: %w", peer.ErrExited)
	case err != nil || pi.Mask&pidfdinfo.InfoCgroupID == 0:
		// The slow path will say what is wrong with the pidfd.
		return Info{}, 0, nil
	}
	x.mu.Lock()
	info, ok := x.m[pi.CgroupID]
	x.mu.Unlock()
	if ok {
		// The ioctl answers for a zombie too: it must still run.
		if err := peer.CheckPIDFD(pidfd); err != nil {
			return Info{}, 0, fmt.Errorf("containerinfo: %w", err)
		}
	}
	return info, pi.CgroupID, nil
}

// Learn remembers that cgroup cgid is the container info names, if proc's
// cgroup v2 path alone names that very container (and pod) and the
// directory at that path is the one with ID cgid. proc must have been read
// after Lookup returned cgid: a caller moved in between has a path whose
// directory has another ID, and so teaches nothing.
func (x *CgroupIndex) Learn(cgid uint64, proc Proc, info Info) {
	if x == nil || cgid == 0 || info.ContainerID == "" {
		return
	}
	for _, cg := range proc.Cgroups {
		if cg.HierarchyID != "0" || len(cg.Controllers) != 0 {
			continue
		}
		got, err := Extract([]string{cg.Path}, x.wantPodUID)
		if err != nil || got != info {
			return
		}
		var st unix.Stat_t
		if unix.Stat(x.root+cg.Path, &st) != nil || st.Ino != cgid {
			return
		}
		x.mu.Lock()
		if x.m == nil || len(x.m) >= cmp.Or(x.max, maxIndexed) {
			x.m = make(map[uint64]Info)
		}
		x.m[cgid] = info
		x.mu.Unlock()
		return
	}
}
