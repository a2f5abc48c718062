package containerinfo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"golang.org/x/sys/unix"
)

func TestCgroup2Root(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified"},
		{"32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup"},
		// A subtree (a bind, or a mount from another cgroup namespace)
		// is not the hierarchy's root; the whole one after it is.
		{"41 31 0:38 /docker /mnt rw - cgroup2 cgroup2 rw\n42 31 0:38 / /cg rw - cgroup2 cgroup2 rw\n", "/cg"},
		{`41 31 0:38 / /with\040space rw - cgroup2 cgroup2 rw`, "/with space"},
		{"41 31 0:38 /docker /mnt rw - cgroup2 cgroup2 rw\n", ""},
		{"garbage\n - \n\n", ""},
		{"", ""},
	} {
		got, err := cgroup2Root([]byte(tc.in))
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("cgroup2Root(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// A cgroup ID is learnt only when the v2 path alone names the same pod and
// container and the directory there has that ID; the index stays bounded.
func TestCgroupIndexLearn(t *testing.T) {
	for _, wantPod := range []bool{true, false} {
		x := &CgroupIndex{root: t.TempDir(), wantPodUID: wantPod, max: 8}
		path := "/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + fmt.Sprintf("%064x", 1)
		p := Proc{Cgroups: []Cgroup{
			{HierarchyID: "4", Controllers: []string{"memory"}, Path: path},
			{HierarchyID: "0", Path: path},
		}}
		info, err := p.Locate(wantPod)
		if err != nil || info.ContainerID == "" || (info.PodUID != "") != wantPod {
			t.Fatalf("%+v %v", info, err)
		}
		known := func(cgid uint64) (Info, bool) {
			x.mu.Lock()
			defer x.mu.Unlock()
			i, ok := x.m[cgid]
			return i, ok
		}
		// No directory at the path: nothing learnt.
		x.Learn(7, p, info)
		if _, ok := known(7); ok {
			t.Fatal("learnt an ID whose directory does not exist")
		}
		if err := os.MkdirAll(x.root+path, 0o755); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(x.root+path, &st); err != nil {
			t.Fatal(err)
		}
		x.Learn(st.Ino+1, p, info)
		if _, ok := known(st.Ino + 1); ok {
			t.Fatal("learnt an ID that is not the directory's")
		}
		other := info
		other.ContainerID = fmt.Sprintf("%064x", 2)
		x.Learn(st.Ino, p, other)
		if _, ok := known(st.Ino); ok {
			t.Fatal("learnt a container the v2 path does not name")
		}
		// Only a v1 line names the container: nothing learnt.
		x.Learn(st.Ino, Proc{Cgroups: []Cgroup{p.Cgroups[0], {HierarchyID: "0", Path: "/"}}}, info)
		if _, ok := known(st.Ino); ok {
			t.Fatal("learnt a container only a v1 path names")
		}
		x.Learn(st.Ino, p, info)
		if got, ok := known(st.Ino); !ok || got != info {
			t.Fatalf("not learnt: %+v %v", got, ok)
		}

		// Bounded: the directory of each ID made on the fly.
		for i := range x.max + 3 {
			rel := fmt.Sprintf("/docker/%064x", i+10)
			if err := os.MkdirAll(x.root+rel, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Stat(x.root+rel, &st); err != nil {
				t.Fatal(err)
			}
			q := Proc{Cgroups: []Cgroup{{HierarchyID: "0", Path: rel}}}
			qi, _ := q.Locate(wantPod)
			x.Learn(st.Ino, q, qi)
		}
		x.mu.Lock()
		n := len(x.m)
		x.mu.Unlock()
		if n == 0 || n > x.max {
			t.Fatalf("index holds %d entries, bound %d", n, x.max)
		}
	}
}

// The nil index (the fast path off) answers nothing, for any fd.
func TestCgroupIndexNil(t *testing.T) {
	var x *CgroupIndex
	x.Learn(1, Proc{Cgroups: []Cgroup{{HierarchyID: "0", Path: "/docker/" + cid}}}, Info{ContainerID: cid})
	info, cgid, err := x.Lookup(0)
	if info != (Info{}) || cgid != 0 || err != nil {
		t.Fatalf("nil Lookup = %+v, %d, %v", info, cgid, err)
	}
}

// On a real cgroup: a process in a container-named cgroup is learnt and
// then answered from its pidfd; moved elsewhere, it is not; a /proc read
// made after a move teaches nothing about the old cgroup; once it exits it
// is refused, as a zombie and once reaped.
func TestCgroupIndexLive(t *testing.T) {
	x, err := NewCgroupIndex(false)
	if err != nil {
		simtest.Skip(t, err.Error())
	}
	idA, idB := randomID(t), randomID(t)
	A := cgrouptest.New(t, "spirehw-idx.slice/docker-"+idA+".scope")
	B := cgrouptest.New(t, "spirehw-idx.slice/docker-"+idB+".scope")
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	// Registered after the groups, so it runs before they are removed.
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	pid := cmd.Process.Pid
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	A.Add(t, pid)

	slow := func(cgid uint64) Info {
		t.Helper()
		p, err := ReadProc("/proc", int32(pid), fd)
		if err != nil {
			t.Fatal(err)
		}
		info, err := p.Locate(false)
		if err != nil {
			t.Fatal(err)
		}
		x.Learn(cgid, p, info)
		return info
	}
	info, cgidA, err := x.Lookup(fd)
	if err != nil || info != (Info{}) || cgidA == 0 {
		t.Fatalf("first Lookup = %+v, %d, %v; want no answer and the cgroup's ID", info, cgidA, err)
	}
	if got := slow(cgidA); got.ContainerID != idA {
		t.Fatalf("located as %+v, want %s", got, idA)
	}
	if info, _, err := x.Lookup(fd); err != nil || info.ContainerID != idA {
		t.Fatalf("Lookup after learning = %+v, %v; want %s", info, err, idA)
	}

	B.Add(t, pid)
	info, cgidB, err := x.Lookup(fd)
	if err != nil || info != (Info{}) || cgidB == cgidA {
		t.Fatalf("Lookup after the move = %+v, %d, %v; want no answer and another ID than %d", info, cgidB, err, cgidA)
	}
	// Moved between the ioctl (which said A) and the /proc read (B).
	if got := slow(cgidA); got.ContainerID != idB {
		t.Fatalf("located as %+v, want %s", got, idB)
	}
	x.mu.Lock()
	learnt := x.m[cgidA]
	x.mu.Unlock()
	if learnt.ContainerID != idA {
		t.Fatalf("cgroup %d now indexed as %+v, want still %s", cgidA, learnt, idA)
	}

	A.Add(t, pid)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, fd)
	if info, _, err := x.Lookup(fd); !errors.Is(err, peer.ErrExited) {
		t.Fatalf("Lookup of a zombie in a known cgroup = %+v, %v; want ErrExited", info, err)
	}
	_ = cmd.Wait()
	reaped = true
	if info, _, err := x.Lookup(fd); !errors.Is(err, peer.ErrExited) {
		t.Fatalf("Lookup of a reaped process = %+v, %v; want ErrExited", info, err)
	}
}

func randomID(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// waitExit waits until the pidfd turns readable: its process has exited.
func waitExit(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond)+1)
		if err == nil && n > 0 {
			return
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
	}
	t.Fatal("the process did not exit")
}
