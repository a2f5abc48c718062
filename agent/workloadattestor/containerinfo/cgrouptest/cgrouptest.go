// Package cgrouptest places real processes in real cgroups for tests of
// what the workload attestors read from /proc/<pid>/cgroup: a group named
// as a container runtime or systemd would name it ("system.slice/x.service",
// "docker/<id>") is made in the cgroup v2 hierarchy and in the v1
// name=systemd one, wherever this kernel mounts them, so that hybrid and
// pure v2 hosts are both covered without changing the test.
//
// It needs root and a writable cgroup file system; without them it skips
// through simtest (a failure under REQUIRE_SIM=1).
package cgrouptest

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// Hierarchies returns the mount points of the hierarchies a group is made
// in: every cgroup2 mount and every v1 mount of the name=systemd hierarchy
// seen in this process's mount namespace, one of each (the first).
func Hierarchies() ([]string, error) {
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
	var out []string
	for _, m := range []string{v2, named} {
		if m != "" {
			out = append(out, m)
		}
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
	// Dirs are the group's directories, one per hierarchy.
	Dirs []string
}

// New makes the group rel (e.g. "system.slice/spirehw-test-1.service") in
// every hierarchy, with any missing parents; the test's cleanup removes
// what New made, deepest first, once the processes in it are gone. It skips
// without root or a writable cgroup file system.
func New(t testing.TB, rel string) *Group {
	t.Helper()
	simtest.RequireRoot(t)
	hs, err := Hierarchies()
	if err != nil {
		simtest.Skip(t, "cgrouptest: "+err.Error())
	}
	g := &Group{Rel: strings.Trim(rel, "/")}
	for _, h := range hs {
		dir := filepath.Join(h, g.Rel)
		made, err := mkdirAll(h, g.Rel)
		// Registered before the error check, so a half-made path goes too.
		t.Cleanup(func() {
			for i := len(made) - 1; i >= 0; i-- {
				if err := os.Remove(made[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("cgrouptest: remove %s: %v", made[i], err)
				}
			}
		})
		if err != nil {
			if errors.Is(err, os.ErrPermission) || errors.Is(err, errReadOnly) {
				simtest.Skip(t, "cgrouptest: cgroup file system not writable: "+err.Error())
			}
			t.Fatalf("cgrouptest: %v", err)
		}
		g.Dirs = append(g.Dirs, dir)
	}
	return g
}

var errReadOnly = errors.New("read-only file system")

// mkdirAll makes root/rel and returns the directories it created, parents
// first.
func mkdirAll(root, rel string) ([]string, error) {
	var made []string
	dir := root
	for _, el := range strings.Split(rel, "/") {
		dir = filepath.Join(dir, el)
		err := os.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			made = append(made, dir)
		case errors.Is(err, os.ErrExist):
		case strings.Contains(err.Error(), "read-only"):
			return made, errors.Join(errReadOnly, err)
		default:
			return made, err
		}
	}
	return made, nil
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
