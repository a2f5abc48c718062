// Package cgrouptest places real processes in real cgroups for tests of
// what the workload attestors read from /proc/<pid>/cgroup: a group named
// as a container runtime or systemd would name it ("system.slice/x.service",
// "docker/<id>") is made in the cgroup v2 hierarchy and in the v1
// name=systemd one, wherever this kernel mounts them, so that hybrid and
// pure v2 hosts are both covered without changing the test.
//
// It needs root and a writable cgroup file system; without them it skips
// through simtest (a failure under REQUIRE_SIM=1). Test binaries run side
// by side may share parents ("system.slice"): a parent another test still
// uses is left for that test to remove.
package cgrouptest

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// Hierarchy is a mounted cgroup hierarchy.
type Hierarchy struct {
	// Mount is where it is mounted ("/sys/fs/cgroup/unified").
	Mount string
	// V2 tells the unified hierarchy from the v1 name=systemd one.
	V2 bool
}

// Hierarchies returns the hierarchies a group is made in: the cgroup2
// mount and the v1 name=systemd mount seen in this process's mount
// namespace, the first of each.
func Hierarchies() ([]Hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var v2, named string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || pf[3] != "/" {
			// Only whole hierarchies: a bind mount of a subtree would
			// put the group somewhere else than its name says.
			continue
		}
		switch {
		case qf[0] == "cgroup2" && v2 == "":
			v2 = pf[4]
		case qf[0] == "cgroup" && named == "" && hasOption(qf[2], "name=systemd"):
			named = pf[4]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []Hierarchy
	if v2 != "" {
		out = append(out, Hierarchy{Mount: v2, V2: true})
	}
	if named != "" {
		out = append(out, Hierarchy{Mount: named})
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup2 or name=systemd hierarchy mounted")
	}
	return out, nil
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// Group is a cgroup of the same relative path in each hierarchy.
type Group struct {
	// Rel is the path below each hierarchy's root, as
	// /proc/<pid>/cgroup shows it without its leading slash.
	Rel string
	// Dirs are the group's directories, one per hierarchy, in the order
	// of Hierarchies.
	Dirs []string
}

// New makes the group rel (e.g. "system.slice/spirehw-test-1.service") in
// every hierarchy, with any missing parents. The test's cleanup removes
// what New made, deepest first, and any cgroups made beneath the group
// meanwhile (by a systemd the test ran there), once the processes in them
// are gone. It skips without root or a writable cgroup file system.
func New(t testing.TB, rel string) *Group {
	t.Helper()
	simtest.RequireRoot(t)
	hs, err := Hierarchies()
	if err != nil {
		simtest.Skip(t, "cgrouptest: "+err.Error())
	}
	g := &Group{Rel: strings.Trim(rel, "/")}
	for _, h := range hs {
		dir := filepath.Join(h.Mount, g.Rel)
		made, err := mkdirAll(h.Mount, g.Rel)
		// Registered before the error check, so a half-made path goes too.
		t.Cleanup(func() { removeMade(t, made) })
		if err != nil {
			if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
				simtest.Skip(t, "cgrouptest: cgroup file system not writable: "+err.Error())
			}
			t.Fatalf("cgrouptest: %v", err)
		}
		g.Dirs = append(g.Dirs, dir)
	}
	return g
}

// mkdirAll makes root/rel and returns the directories it created, parents
// first. A parent that another test binary removes between our finding it
// and making its child is made again.
func mkdirAll(root, rel string) ([]string, error) {
	var made []string
	for try := 0; ; try++ {
		dir := root
		var err error
		for _, el := range strings.Split(rel, "/") {
			dir = filepath.Join(dir, el)
			if err = os.Mkdir(dir, 0o755); err == nil {
				made = append(made, dir)
			} else if errors.Is(err, os.ErrExist) {
				err = nil
			} else {
				break
			}
		}
		if err == nil || !errors.Is(err, os.ErrNotExist) || try == 5 {
			return made, err
		}
	}
}

// removeMade removes the directories New made, deepest first, each with
// whatever cgroups were made beneath it. A cgroup that is still busy
// (another test's child, or a process of ours not yet reaped) is left.
func removeMade(t testing.TB, made []string) {
	for i := len(made) - 1; i >= 0; i-- {
		removeTree(t, made[i])
	}
}

func removeTree(t testing.TB, dir string) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeTree(t, filepath.Join(dir, e.Name()))
		}
	}
	switch err := os.Remove(dir); {
	case err == nil, errors.Is(err, os.ErrNotExist):
	case errors.Is(err, syscall.EBUSY):
		t.Logf("cgrouptest: %s still in use, left in place", dir)
	default:
		t.Errorf("cgrouptest: remove %s: %v", dir, err)
	}
}

// Add moves process pid into the group in every hierarchy.
func (g *Group) Add(t testing.TB, pid int) {
	t.Helper()
	for _, d := range g.Dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatalf("cgrouptest: move pid %d into %s: %v", pid, d, err)
		}
	}
}

// Start starts cmd and moves it into the group before returning; the
// test's cleanup kills and reaps it (before the group is removed, since
// cleanups run last-registered first).
func (g *Group) Start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("cgrouptest: start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	g.Add(t, cmd.Process.Pid)
}

// Enter moves the test process itself into the group, for a test that
// attests its own process; the cleanup moves it back where it was.
func (g *Group) Enter(t testing.TB) {
	t.Helper()
	hs, err := Hierarchies()
	if err != nil {
		t.Fatalf("cgrouptest: %v", err)
	}
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatalf("cgrouptest: %v", err)
	}
	var back []string
	for _, h := range hs {
		p, ok := ownPath(string(raw), h.V2)
		if !ok {
			t.Fatalf("cgrouptest: this process has no cgroup in %s", h.Mount)
		}
		back = append(back, filepath.Join(h.Mount, p))
	}
	pid := strconv.Itoa(os.Getpid())
	t.Cleanup(func() {
		for _, d := range back {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(pid), 0); err != nil {
				t.Errorf("cgrouptest: move back into %s: %v", d, err)
			}
		}
	})
	g.Add(t, os.Getpid())
}

// ownPath finds this process's cgroup in the v2 hierarchy ("0::") or the
// name=systemd one.
func ownPath(cgroupFile string, v2 bool) (string, bool) {
	for _, line := range strings.Split(cgroupFile, "\n") {
		id, rest, _ := strings.Cut(line, ":")
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if (v2 && id == "0" && ctrls == "") || (!v2 && hasOption(ctrls, "name=systemd")) {
			return p, true
		}
	}
	return "", false
}

// Existing returns the group rel that someone else made (a systemd the
// test runs placed a unit there), for Add and Enter; the test does not
// remove it. It must exist in every hierarchy.
func Existing(t testing.TB, rel string) *Group {
	t.Helper()
	simtest.RequireRoot(t)
	hs, err := Hierarchies()
	if err != nil {
		simtest.Skip(t, "cgrouptest: "+err.Error())
	}
	g := &Group{Rel: strings.Trim(rel, "/")}
	for _, h := range hs {
		dir := filepath.Join(h.Mount, g.Rel)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("cgrouptest: no cgroup %s", dir)
		}
		g.Dirs = append(g.Dirs, dir)
	}
	return g
}
