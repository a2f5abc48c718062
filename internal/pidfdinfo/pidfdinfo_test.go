package pidfdinfo

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"github.com/spiffe-hw/spire-hw/sim/simtest"

	"golang.org/x/sys/unix"
)

func open(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestInfoSize(t *testing.T) {
	// PIDFD_INFO_SIZE_VER0: the kernel refuses a smaller struct.
	if n := unsafeSizeofInfo(); n != 64 {
		t.Fatalf("struct pidfd_info is %d bytes, want 64", n)
	}
}

// Get describes the pidfd's own process: this one, then a child that
// exits; once reaped, the child's pidfd says ErrExited, whoever has its PID.
func TestGet(t *testing.T) {
	if !Supported() {
		simtest.Skip(t, "this kernel has no PIDFD_GET_INFO (Linux 6.13): nothing to test")
	}
	self := open(t, os.Getpid())
	info, err := Get(self, InfoCgroupID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mask&(InfoPID|InfoCreds) != InfoPID|InfoCreds || int(info.PID) != os.Getpid() ||
		int(info.EUID) != os.Geteuid() || int(info.RGID) != os.Getgid() {
		t.Fatalf("own info %+v: want pid %d, euid %d, gid %d", info, os.Getpid(), os.Geteuid(), os.Getgid())
	}
	if info.Mask&InfoCgroupID != 0 {
		var st unix.Stat_t
		if p := cgroup2Dir(t); p != "" {
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Ino != info.CgroupID {
				t.Fatalf("cgroup ID %d, but %s has inode %d", info.CgroupID, p, st.Ino)
			}
		}
	}

	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := open(t, cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := Get(child, 0); !errors.Is(err, ErrExited) {
		t.Fatalf("reaped child: %v, want ErrExited", err)
	}
}

// An fd that is not a pidfd is an error of its own and does not turn the
// ioctl off.
func TestNotAPidfd(t *testing.T) {
	if !Supported() {
		simtest.Skip(t, "this kernel has no PIDFD_GET_INFO (Linux 6.13): nothing to test")
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Get(int(f.Fd()), 0); err == nil || errors.Is(err, ErrUnsupported) {
		t.Fatalf("Get(/dev/null) = %v, want an error other than ErrUnsupported", err)
	}
	if _, err := Get(open(t, os.Getpid()), 0); err != nil {
		t.Fatalf("after a non-pidfd: %v", err)
	}
}

func unsafeSizeofInfo() uintptr { return unsafe.Sizeof(Info{}) }

// cgroup2Dir is this process's cgroup v2 directory where the hierarchy is
// mounted at /sys/fs/cgroup, "" elsewhere.
func cgroup2Dir(t *testing.T) string {
	var fs unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &fs) != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return ""
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return "/sys/fs/cgroup" + p
		}
	}
	return ""
}
