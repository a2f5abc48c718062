// Package dockertest moves real processes into a real container's cgroups,
// so that tests and benchmarks of the docker attestor can make a process of
// their own (the test binary, or a process that took a dead container's
// PID) look, to the kernel and so to the attestor, like a process of that
// container.
//
// It touches the cgroup v2 hierarchy, which is enough for the attestors'
// locators and is where the kernel reports a process's cgroup ID, and the
// v1 hierarchies in which the process sits at the root: a v1 cgroup that
// something else put the process in (a session's memory cgroup, a systemd
// slice) is left alone. Everything moved is moved back by the function
// JoinCgroupsOf returns.
package dockertest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// hierarchy is one line of /proc/<pid>/cgroup with the mount point of its
// hierarchy.
type hierarchy struct {
	key   string // "0::" for cgroup v2, else the controller list
	path  string
	mount string
}

// JoinCgroupsOf moves process pid into the cgroups process of is in (see
// the package documentation for which) and returns a function that moves
// it back (a no-op once pid has exited). It fails tb if no hierarchy could
// be joined.
func JoinCgroupsOf(tb testing.TB, pid, of int) (restore func()) {
	tb.Helper()
	mine, err := hierarchies(pid)
	if err != nil {
		tb.Fatalf("dockertest: %v", err)
	}
	theirs, err := hierarchies(of)
	if err != nil {
		tb.Fatalf("dockertest: %v", err)
	}
	var moved []hierarchy // where pid was, in each hierarchy it left
	for _, h := range mine {
		if h.mount == "" || (h.path != "/" && h.key != "0::") {
			continue
		}
		i := slices.IndexFunc(theirs, func(o hierarchy) bool { return o.key == h.key })
		if i < 0 || theirs[i].path == h.path {
			continue
		}
		if err := write(filepath.Join(h.mount, theirs[i].path), pid); err != nil {
			tb.Fatalf("dockertest: move pid %d into %s %s: %v", pid, h.key, theirs[i].path, err)
		}
		moved = append(moved, h)
	}
	if len(moved) == 0 {
		tb.Fatalf("dockertest: pid %d shares no hierarchy it may leave with pid %d's cgroups", pid, of)
	}
	return func() {
		for _, h := range moved {
			if err := write(filepath.Join(h.mount, h.path), pid); err != nil && !errors.Is(err, syscall.ESRCH) {
				tb.Errorf("dockertest: move pid %d back to %s %s: %v", pid, h.key, h.path, err)
			}
		}
	}
}

func write(dir string, pid int) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// hierarchies reads /proc/<pid>/cgroup and finds each hierarchy's mount in
// this process's mount namespace.
func hierarchies(pid int) ([]hierarchy, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []hierarchy
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("/proc/%d/cgroup: bad line %q", pid, line)
		}
		key := parts[1]
		if parts[0] == "0" && key == "" {
			key = "0::"
		}
		out = append(out, hierarchy{key: key, path: parts[2], mount: mounts[key]})
	}
	return out, nil
}

// cgroupMounts maps each hierarchy (controller list as /proc/<pid>/cgroup
// spells it, or "0::") to a mount of its root.
func cgroupMounts() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || f[3] != "/" {
			continue
		}
		switch g[0] {
		case "cgroup2":
			if _, ok := out["0::"]; !ok {
				out["0::"] = f[4]
			}
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(g[2], ",") {
				if o != "rw" && o != "ro" && !strings.HasPrefix(o, "release_agent=") && o != "xattr" && o != "noprefix" && o != "clone_children" && o != "cpuset_v2_mode" && o != "nsdelegate" {
					ctrls = append(ctrls, o)
				}
			}
			key := strings.Join(ctrls, ",")
			if _, ok := out[key]; !ok {
				out[key] = f[4]
			}
		}
	}
	return out, sc.Err()
}
