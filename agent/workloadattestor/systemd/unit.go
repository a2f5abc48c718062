package systemd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
)

// systemdPath picks the cgroup systemd tracks processes in: the v1
// name=systemd hierarchy where there is one (legacy and hybrid hosts),
// else the v2 one ("0::").
func systemdPath(cgs []containerinfo.Cgroup) (string, error) {
	v2 := ""
	for _, c := range cgs {
		if c.HasController("name=systemd") {
			return c.Path, nil
		}
		if c.HierarchyID == "0" && len(c.Controllers) == 0 {
			v2 = c.Path
		}
	}
	if v2 == "" {
		return "", errors.New("neither a name=systemd nor a cgroup v2 hierarchy in the caller's cgroups")
	}
	return v2, nil
}

// unitFromPath returns the unit a cgroup path belongs to, by systemd's own
// rule (cg_path_get_unit): skip the leading slices, and the next element
// is the unit. What lies below it belongs to that unit too: a delegated
// subtree (a container manager's, or user@1000.service's own units) is
// named by whoever the unit delegated it to, so a name found deeper could
// be anyone's choice, while the unit's own cgroup is named by systemd. A
// path of slices only names the innermost slice ("-.slice" for "/"), as
// systemd's GetUnitByPID would, and so does a path whose first element
// below the slices is not a unit's; slice reports that.
func unitFromPath(p string) (unit string, slice bool, err error) {
	if !strings.HasPrefix(p, "/") {
		return "", false, fmt.Errorf("cgroup path %q is not absolute (an agent in a private cgroup namespace cannot name units)", p)
	}
	last := "-.slice"
	for _, el := range strings.Split(strings.Trim(p, "/"), "/") {
		if el == "" {
			break
		}
		if el == ".." {
			return "", false, fmt.Errorf("cgroup path %q is outside the agent's cgroup namespace, where units cannot be named", p)
		}
		name := unescape(el)
		typ, ok := unitType(name)
		switch {
		case ok && typ == "slice":
			last = name
			continue
		case !ok || !processUnits[typ]:
			// No unit made this cgroup ("/docker/<id>" of a cgroupfs
			// runtime): systemd's GetUnitByPID, which SPIRE asks, walks up
			// to the slice above it, and so does this.
			return last, true, nil
		}
		return name, false, nil
	}
	return last, true, nil
}

// processUnits are the unit types that own cgroups with processes in them
// (a socket, mount or swap unit runs its Exec*= commands in its own).
var processUnits = map[string]bool{"service": true, "scope": true, "socket": true, "mount": true, "swap": true}

// unitTypes are all of systemd's unit types.
var unitTypes = map[string]bool{
	"service": true, "socket": true, "target": true, "device": true, "mount": true, "automount": true,
	"swap": true, "timer": true, "path": true, "slice": true, "scope": true,
}

// unescape undoes systemd's cg_escape: a cgroup name that could be taken
// for a kernel file ("cpu.service", "tasks", "_x") gets a leading "_".
func unescape(el string) string {
	return strings.TrimPrefix(el, "_")
}

// unitType returns the type of a valid unit name ("foo.service",
// "getty@tty1.service"), following systemd's unit_name_is_valid for plain
// and instance names: at most 255 bytes, a non-empty prefix of
// [A-Za-z0-9:_.\-], then optionally "@" and a non-empty instance of the
// same characters and "@", and a known type.
func unitType(name string) (string, bool) {
	if name == "" || len(name) > 255 {
		return "", false
	}
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 {
		return "", false
	}
	typ, base := name[dot+1:], name[:dot]
	if !unitTypes[typ] {
		return "", false
	}
	prefix, instance, templated := strings.Cut(base, "@")
	if prefix == "" || !validChars(prefix) {
		return "", false
	}
	// A template without an instance ("getty@.service") names no running
	// unit.
	if templated && (instance == "" || !validChars(strings.ReplaceAll(instance, "@", ""))) {
		return "", false
	}
	return typ, true
}

func validChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':' || c == '-' || c == '_' || c == '.' || c == '\\':
		default:
			return false
		}
	}
	return true
}
