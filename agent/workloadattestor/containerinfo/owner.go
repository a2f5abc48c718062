package containerinfo

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrDelegated is wrapped by RootOwned's error for a caller whose cgroup
// sits in a subtree delegated to an unprivileged user.
var ErrDelegated = errors.New("containerinfo: cgroup is in a subtree delegated to an unprivileged user")

// cgroup2Mount is where this process sees the whole cgroup v2 hierarchy.
var cgroup2Mount = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	return cgroup2Root(b)
})

// RootOwned checks that the cgroup v2 directory a caller's path names
// container id in, and every directory above it, belongs to root, as the
// cgroups a kubelet and its runtime make do. Where the cgroup v2 path does
// not name id (a cgroup v1 host), or lies outside this process's cgroup
// namespace (an agent in a private one), it cannot be checked here and is
// passed.
//
// Names in a cgroup path are chosen by whoever made the directory, and
// systemd hands whole subtrees to unprivileged users (user@<uid>.service,
// Delegate=yes units run as a user), chowned to them: a user there can make
// "kubepods/pod<uid>/<id>" after any pod's container and move in. An
// attestor that cannot ask the runtime where the container really is (the
// kubelet reports no PIDs) tells such a forgery by its owner. A rootless
// kubelet's pods are refused for the same reason.
func RootOwned(cgroups []Cgroup, id string) error {
	if id == "" {
		return nil
	}
	for _, c := range cgroups {
		if c.HierarchyID != "0" || len(c.Controllers) != 0 || !strings.Contains(c.Path, id) {
			continue
		}
		if c.Path == "/.." || strings.HasPrefix(c.Path, "/../") {
			// Outside this process's cgroup namespace (an agent in a pod
			// with a private one, the default on cgroup v2 nodes): its
			// cgroup mount does not reach the caller's directories.
			continue
		}
		root, err := cgroup2Mount()
		if err != nil {
			return fmt.Errorf("containerinfo: check the owner of cgroup %q: %w", c.Path, err)
		}
		dir := root
		for _, el := range strings.Split(strings.Trim(c.Path, "/"), "/") {
			dir += "/" + el
			var st unix.Stat_t
			if err := unix.Lstat(dir, &st); err != nil {
				return fmt.Errorf("containerinfo: check the owner of cgroup %q: %w", c.Path, err)
			}
			if st.Uid != 0 {
				return fmt.Errorf("%w: %s belongs to uid %d", ErrDelegated, dir, st.Uid)
			}
		}
	}
	return nil
}
