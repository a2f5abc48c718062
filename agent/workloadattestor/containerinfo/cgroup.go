package containerinfo

import (
	"errors"
	"fmt"
	"strings"
)

// Cgroup is one line of /proc/<pid>/cgroup: the hierarchy, the controllers
// bound to it (none for the cgroup v2 hierarchy, "0::"; a v1 named
// hierarchy lists "name=systemd"), and the process's cgroup in it.
type Cgroup struct {
	HierarchyID string
	Controllers []string
	Path        string
}

// ParseCgroups parses the content of /proc/<pid>/cgroup: v1
// ("4:memory:/docker/<id>"), v2 ("0::/system.slice/x.service") or both, as
// on hybrid hosts. It is strict, since what it returns decides an identity:
// every line must be "<decimal id>:<controllers>:<absolute path>", with
// controllers on every v1 line and none on the v2 one.
func ParseCgroups(b []byte) ([]Cgroup, error) {
	s := string(b)
	// The kernel ends every line with a newline; only that last one is
	// not a separator.
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil, errors.New("containerinfo: cgroup file is empty")
	}
	lines := strings.Split(s, "\n")
	out := make([]Cgroup, 0, len(lines))
	for i, line := range lines {
		cg, err := parseCgroupLine(line)
		if err != nil {
			return nil, fmt.Errorf("containerinfo: cgroup line %d %.80q: %w", i+1, line, err)
		}
		out = append(out, cg)
	}
	return out, nil
}

func parseCgroupLine(line string) (Cgroup, error) {
	id, rest, ok := strings.Cut(line, ":")
	if !ok {
		return Cgroup{}, errors.New("want hierarchy-id:controllers:path")
	}
	// A cgroup's name may itself contain colons, so the path is all that
	// follows the second one.
	ctrls, path, ok := strings.Cut(rest, ":")
	if !ok {
		return Cgroup{}, errors.New("want hierarchy-id:controllers:path")
	}
	if !isDecimal(id) {
		return Cgroup{}, fmt.Errorf("hierarchy id %q is not a decimal number", id)
	}
	if !strings.HasPrefix(path, "/") {
		return Cgroup{}, fmt.Errorf("path %q is not absolute", path)
	}
	cg := Cgroup{HierarchyID: id, Path: path}
	switch {
	case id == "0" && ctrls != "":
		return Cgroup{}, fmt.Errorf("the cgroup v2 hierarchy (0) lists controllers %q", ctrls)
	case id != "0" && ctrls == "":
		return Cgroup{}, fmt.Errorf("v1 hierarchy %s lists no controllers", id)
	case ctrls != "":
		cg.Controllers = strings.Split(ctrls, ",")
		for _, c := range cg.Controllers {
			if c == "" {
				return Cgroup{}, fmt.Errorf("empty controller in %q", ctrls)
			}
		}
	}
	return cg, nil
}

// isDecimal reports whether s is a non-empty run of ASCII digits of a size
// a hierarchy ID can have.
func isDecimal(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// HasController reports whether c is bound to the controller (or named
// hierarchy, "name=systemd") ctrl.
func (c Cgroup) HasController(ctrl string) bool {
	for _, x := range c.Controllers {
		if x == ctrl {
			return true
		}
	}
	return false
}
