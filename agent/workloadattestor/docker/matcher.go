package docker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The two tokens of SPIRE's container_id_cgroup_matchers language: one path
// component of any value, and the component that is the container ID.
const (
	wildcardToken    = "*"
	containerIDToken = "<id>"
)

// Matchers is the legacy container locator: a set of patterns such as
// "/docker/<id>" or "/my.slice/*/<id>/*" over "/"-separated cgroup paths
// (container_id_cgroup_matchers). It is not a regular expression: a pattern
// matches a path with as many components, each literal component equal, "*"
// anything and "<id>" anything, taken as the container ID.
type Matchers struct {
	patterns [][]string
}

// NewMatchers parses patterns, with SPIRE's rules and errors: at least one
// pattern, no two that could match the same path (checked here, so a bad
// rollout fails at start-up rather than on some workload's cgroup later),
// and "<id>" exactly once in each.
func NewMatchers(patterns []string) (*Matchers, error) {
	if len(patterns) < 1 {
		return nil, errors.New("dockerfinder: at least 1 pattern must be supplied")
	}
	if amb := ambiguous(patterns); len(amb) != 0 {
		return nil, fmt.Errorf("dockerfinder: patterns must not be ambiguous: %q", amb)
	}
	m := &Matchers{}
	for _, p := range patterns {
		comps := strings.Split(p, "/")
		if n := countIDTokens(comps); n != 1 {
			return nil, fmt.Errorf("pattern %q must contain the container id token %q exactly once", p, containerIDToken)
		}
		m.patterns = append(m.patterns, comps)
	}
	return m, nil
}

func countIDTokens(comps []string) int {
	n := 0
	for _, c := range comps {
		if c == containerIDToken {
			n++
		}
	}
	return n
}

// Find returns the container ID the first matching pattern extracts from a
// cgroup path, and whether any matched. The ID may be empty ("/docker/"
// matches "/docker/<id>"); the caller refuses that.
func (m *Matchers) Find(cgroupPath string) (string, bool) {
	comps := strings.Split(cgroupPath, "/")
	for _, p := range m.patterns {
		if id, ok := match(p, comps); ok {
			return id, true
		}
	}
	return "", false
}

func match(pattern, comps []string) (string, bool) {
	if len(pattern) != len(comps) {
		return "", false
	}
	var id string
	for i, pc := range pattern {
		switch pc {
		case wildcardToken:
		case containerIDToken:
			id = comps[i]
		default:
			if pc != comps[i] {
				return "", false
			}
		}
	}
	return id, true
}

// ambiguous returns, sorted, every pattern that some other pattern could
// match the same path as: same number of components, and at each one equal
// text or a token on either side.
func ambiguous(patterns []string) []string {
	var out []string
	for i, a := range patterns {
		for _, b := range patterns[i+1:] {
			if equivalent(a, b) {
				out = append(out, a, b)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func equivalent(a, b string) bool {
	if a == b {
		return true
	}
	ac, bc := strings.Split(a, "/"), strings.Split(b, "/")
	if len(ac) != len(bc) {
		return false
	}
	for i := range ac {
		x, y := ac[i], bc[i]
		if x != y && !isToken(x) && !isToken(y) {
			return false
		}
	}
	return true
}

func isToken(c string) bool { return c == wildcardToken || c == containerIDToken }

// containerID applies the matchers to every cgroup path of a process, as
// SPIRE's legacy locator does: no match means not a container; all matches
// must agree, and on a non-empty ID.
func (m *Matchers) containerID(paths []string) (string, error) {
	var found bool
	var id string
	for _, p := range paths {
		cand, ok := m.Find(p)
		if !ok {
			continue
		}
		found = true
		switch {
		case id == "":
			// As SPIRE: an empty ID so far is replaced, not compared.
			id = cand
		case cand != id:
			return "", fmt.Errorf("workloadattestor/docker: multiple container IDs found in cgroups (%s, %s)", id, cand)
		}
	}
	switch {
	case !found:
		return "", nil
	case id == "":
		return "", errors.New("workloadattestor/docker: a pattern matched, but no container id was found")
	}
	return id, nil
}
