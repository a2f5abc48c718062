package containerinfo

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotWithin is wrapped by Within's error for a caller whose cgroups are
// not those of the container its cgroup paths name.
var ErrNotWithin = errors.New("containerinfo: caller is not in the container's cgroups")

// Within checks that a caller whose cgroup paths name container id is
// really in that container: in every hierarchy where its path names id, its
// cgroup must be the container's cgroup, or one beneath it, as the cgroups
// of a process known to be in the container (its init, from the engine)
// show it. Only those lines are the locator's evidence; the others may
// differ from the init's without saying anything about the container (a v1
// cgroup a session manager keeps every process in). A caller none of whose
// paths names id (located by its mount roots) is checked in every
// hierarchy, since then nothing else vouches for it.
//
// A cgroup path is the kernel's, but its names are not: under cgroup v2
// delegation (a systemd user manager's user@<uid>.service, a Delegate=yes
// unit, a container given a writable cgroup namespace) a workload may make
// sub-cgroups of its own and move into one named "docker-<id>.scope" or
// "<id>" after any other container. The locator, which reads names, cannot
// tell that from the real thing; where the directory sits can: the real
// container's cgroup is where its init is, and a forged one is elsewhere.
//
// The container's cgroup in a hierarchy is the init's path up to the
// element naming id (a container's init may itself sit in a sub-cgroup,
// as under systemd), or the init's whole path where no element names it
// (controllers the runtime left at the root). A hierarchy of the caller's
// that the init lacks fails the check.
func Within(caller, container []Cgroup, id string) error {
	if id == "" || len(caller) == 0 {
		return fmt.Errorf("%w: nothing to compare", ErrNotWithin)
	}
	roots := make(map[string]string, len(container))
	for _, c := range container {
		roots[c.HierarchyID+":"+strings.Join(c.Controllers, ",")] = containerRoot(c.Path, id)
	}
	evidence := make([]Cgroup, 0, len(caller))
	for _, c := range caller {
		if containerRoot(c.Path, id) != c.Path || strings.Contains(c.Path, id) {
			evidence = append(evidence, c)
		}
	}
	if len(evidence) == 0 {
		evidence = caller
	}
	for _, c := range evidence {
		key := c.HierarchyID + ":" + strings.Join(c.Controllers, ",")
		root, ok := roots[key]
		if !ok {
			return fmt.Errorf("%w: container %.12s has no cgroup in hierarchy %q", ErrNotWithin, id, key)
		}
		if !beneath(c.Path, root) {
			return fmt.Errorf("%w: cgroup %q of hierarchy %q is not container %.12s's %q", ErrNotWithin, c.Path, key, id, root)
		}
	}
	return nil
}

// containerRoot cuts p after its first element that holds id.
func containerRoot(p, id string) string {
	elems := strings.Split(p, "/")
	for i, e := range elems {
		if e != "" && strings.Contains(e, id) {
			return strings.Join(elems[:i+1], "/")
		}
	}
	return p
}

// beneath reports whether cgroup path p is root or below it.
func beneath(p, root string) bool {
	if root == "/" || p == root {
		return true
	}
	return strings.HasPrefix(p, root+"/")
}
