package containerinfo_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"

	"golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
)

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		simtest.Skip(t, "pidfd_open unavailable: "+err.Error())
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// sleeper is a child that lives until the test kills it.
func sleeper() *exec.Cmd { return exec.Command("sleep", "600") }

// TestReadProcSelf reads the test's own cgroups as the kernel shows them.
func TestReadProcSelf(t *testing.T) {
	fd := pidfd(t, os.Getpid())
	p, err := containerinfo.ReadProc("/proc", int32(os.Getpid()), fd)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want, err := containerinfo.ParseCgroups(raw)
	if err != nil {
		t.Fatalf("this kernel's own cgroup file does not parse: %v", err)
	}
	if strings.Join(p.CgroupPaths(), "\n") != strings.Join(cgPaths(want), "\n") {
		t.Errorf("ReadProc cgroups %q, want %q", p.CgroupPaths(), cgPaths(want))
	}
}

func cgPaths(cgs []containerinfo.Cgroup) []string {
	var out []string
	for _, c := range cgs {
		out = append(out, c.Path)
	}
	return out
}

// TestReadProcRealCgroups puts real processes in cgroups named as the
// runtimes name them and locates them through the kernel's own rendering.
func TestReadProcRealCgroups(t *testing.T) {
	id := randHex(t, 64)
	pod := strings.Join([]string{randHex(t, 8), randHex(t, 4), randHex(t, 4), randHex(t, 4), randHex(t, 12)}, "-")
	tag := "spirehw-test-" + randHex(t, 8)
	for _, tc := range []struct {
		name    string
		rel     string
		wantPod bool
		want    containerinfo.Info
	}{
		{"DockerCgroupfs", tag + "/docker/" + id, false, containerinfo.Info{ContainerID: id}},
		{"DockerSystemd", tag + ".slice/docker-" + id + ".scope", false, containerinfo.Info{ContainerID: id}},
		{"KubepodsCgroupfs", tag + "/kubepods/besteffort/pod" + pod + "/" + id, true, containerinfo.Info{PodUID: pod, ContainerID: id}},
		{
			"KubepodsSystemd",
			tag + ".slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(pod, "-", "_") + ".slice/cri-containerd-" + id + ".scope",
			true, containerinfo.Info{PodUID: pod, ContainerID: id},
		},
		{"SystemdService", tag + ".slice/" + tag + ".service", true, containerinfo.Info{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := cgrouptest.New(t, tc.rel)
			cmd := sleeper()
			g.Start(t, cmd)
			fd := pidfd(t, cmd.Process.Pid)
			p, err := containerinfo.ReadProc("/proc", int32(cmd.Process.Pid), fd)
			if err != nil {
				t.Fatal(err)
			}
			found := 0
			for _, c := range p.Cgroups {
				if c.Path == "/"+g.Rel {
					found++
				}
			}
			if found != len(g.Dirs) {
				t.Fatalf("child's cgroups %q: /%s in %d hierarchies, want %d", p.CgroupPaths(), g.Rel, found, len(g.Dirs))
			}
			got, err := p.Locate(tc.wantPod)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Locate = %+v, want %+v", got, tc.want)
			}
			if tc.want.ContainerID != "" && p.MountRoots != nil {
				t.Errorf("mountinfo read although the cgroup file named the container: %q", p.MountRoots)
			}
		})
	}
}

// TestReadProcReusedPID stands in for a caller whose PID another process
// took: the /proc entry for the PID is a live stranger's (in a container
// cgroup, so a wrong answer would be visible), the pidfd the caller's, who
// has exited and been reaped. ReadProc must refuse, not describe the
// stranger.
func TestReadProcReusedPID(t *testing.T) {
	id := randHex(t, 64)
	g := cgrouptest.New(t, "spirehw-test-"+randHex(t, 8)+"/docker/"+id)
	stranger := sleeper()
	g.Start(t, stranger)

	caller := exec.Command("true")
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	fd := pidfd(t, caller.Process.Pid)
	if err := caller.Wait(); err != nil {
		t.Fatal(err)
	}

	// A private /proc whose entry for the caller's PID is the stranger.
	proc := t.TempDir()
	if err := os.Symlink(filepath.Join("/proc", itoa(stranger.Process.Pid)), filepath.Join(proc, itoa(caller.Process.Pid))); err != nil {
		t.Fatal(err)
	}
	p, err := containerinfo.ReadProc(proc, int32(caller.Process.Pid), fd)
	if !errors.Is(err, peer.ErrExited) {
		t.Fatalf("ReadProc of a reaped caller = %+v, %v; want peer.ErrExited", p, err)
	}

	// The same /proc with the stranger's own pidfd is read normally, so
	// the refusal above came from the pidfd and not from the symlink.
	if err := os.Symlink(filepath.Join("/proc", itoa(stranger.Process.Pid)), filepath.Join(proc, itoa(stranger.Process.Pid))); err != nil {
		t.Fatal(err)
	}
	p, err = containerinfo.ReadProc(proc, int32(stranger.Process.Pid), pidfd(t, stranger.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := p.Locate(false); err != nil || info.ContainerID != id {
		t.Fatalf("stranger located as %+v, %v; want container %s", info, err, id)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestReadProcMissing covers a PID with no /proc entry, and bad PIDs.
func TestReadProcMissing(t *testing.T) {
	proc := t.TempDir()
	if _, err := containerinfo.ReadProc(proc, 12345, -1); err == nil {
		t.Error("ReadProc of a missing /proc entry succeeded")
	}
	for _, pid := range []int32{0, -1} {
		if _, err := containerinfo.ReadProc("/proc", pid, -1); err == nil {
			t.Errorf("ReadProc(pid %d) succeeded", pid)
		}
	}
}

// TestReadProcUnparsable refuses a cgroup file that does not parse, with
// the reason.
func TestReadProcUnparsable(t *testing.T) {
	proc := t.TempDir()
	dir := filepath.Join(proc, "77")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := containerinfo.ReadProc(proc, 77, -1)
	if err == nil || !strings.Contains(err.Error(), "hierarchy-id:controllers:path") {
		t.Fatalf("ReadProc of a garbage cgroup file = %v, want a parse error", err)
	}
	// Fallback to mountinfo: a file there that does not parse is an error
	// too, not an empty answer.
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte("0::/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mountinfo"), []byte("1 2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := containerinfo.ReadProc(proc, 77, -1); err == nil || !strings.Contains(err.Error(), "mountinfo") {
		t.Fatalf("ReadProc with a garbage mountinfo = %v, want a parse error", err)
	}
	if cgs, err := containerinfo.ReadCgroups(proc, 77, -1); err != nil || len(cgs) != 1 {
		t.Fatalf("ReadCgroups, which has no use for mountinfo, = %+v, %v", cgs, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mountinfo"), []byte("30 1 0:26 /../../docker-"+strings.Repeat("ab", 32)+".scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := containerinfo.ReadProc(proc, 77, -1)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := p.Locate(false); info.ContainerID != strings.Repeat("ab", 32) {
		t.Fatalf("Locate from mount roots %q = %+v", p.MountRoots, info)
	}
}

// BenchmarkReadProc measures what every docker or k8s attestation pays
// before any cache: a caller in a container (the cgroup file alone) and
// one in none (mountinfo too).
func BenchmarkReadProc(b *testing.B) {
	for _, bc := range []struct {
		name, rel string
	}{
		{"Container", "spirehw-bench/docker/" + strings.Repeat("ab", 32)},
		{"NoContainer", "spirehw-bench/plain"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := cgrouptest.New(b, bc.rel)
			cmd := sleeper()
			g.Start(b, cmd)
			fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
			if err != nil {
				simtest.Skip(b, "pidfd_open: "+err.Error())
			}
			defer unix.Close(fd)
			for b.Loop() {
				p, err := containerinfo.ReadProc("/proc", int32(cmd.Process.Pid), fd)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Locate(true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
