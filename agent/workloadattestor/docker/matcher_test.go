package docker

import (
	"strings"
	"testing"
)

func TestMatchers(t *testing.T) {
	type match struct{ path, id string }
	for _, tc := range []struct {
		name     string
		patterns []string
		matches  []match
		misses   []string
	}{
		{
			name:     "single",
			patterns: []string{"/docker/<id>"},
			matches:  []match{{"/docker/", ""}, {"/docker/foo", "foo"}},
			misses:   []string{"", "/", "/docker", "/dockerfoo", "/docker/foo/", "/docker/foo/bar", "/docker/foo/docker/foo"},
		},
		{
			name:     "wildcards",
			patterns: []string{"/long.slice/*/*/<id>/*"},
			matches:  []match{{"/long.slice/foo/bar//qux", ""}, {"/long.slice/foo/bar/baz/", "baz"}, {"/long.slice/foo/bar/baz/qux", "baz"}},
			misses:   []string{"/long.slice/foo/bar/baz", "/long.slice/foo/bar/baz/qux/x", "/short.slice/foo/bar/baz/qux"},
		},
		{
			name:     "several",
			patterns: []string{"/docker/<id>", "/my.slice/*/<id>/*"},
			matches:  []match{{"/docker/abc", "abc"}, {"/my.slice/x/abc/y", "abc"}},
			misses:   []string{"/my.slice/x/abc"},
		},
		{
			// Regular expression syntax is literal text.
			name:     "literal",
			patterns: []string{"/a.b+(c)/<id>"},
			matches:  []match{{"/a.b+(c)/x", "x"}},
			misses:   []string{"/aXbb(c)/x", "/abbc/x"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMatchers(tc.patterns)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.matches {
				if id, ok := m.Find(w.path); !ok || id != w.id {
					t.Errorf("Find(%q) = %q, %v; want %q, true", w.path, id, ok, w.id)
				}
			}
			for _, p := range tc.misses {
				if id, ok := m.Find(p); ok {
					t.Errorf("Find(%q) = %q, true; want no match", p, id)
				}
			}
		})
	}
}

func TestNewMatchersErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		patterns []string
		want     string
	}{
		{"none", nil, "dockerfinder: at least 1 pattern must be supplied"},
		{"no id", []string{"/docker/*"}, `pattern "/docker/*" must contain the container id token "<id>" exactly once`},
		{"two ids", []string{"/<id>/<id>"}, `pattern "/<id>/<id>" must contain the container id token "<id>" exactly once`},
		{"id inside a component", []string{"/docker-<id>"}, `must contain the container id token "<id>" exactly once`},
		{"ambiguous", []string{"/a/b/<id>", "/*/b/<id>"}, `dockerfinder: patterns must not be ambiguous: ["/*/b/<id>" "/a/b/<id>"]`},
		{"duplicate", []string{"/docker/<id>", "/docker/<id>"}, `dockerfinder: patterns must not be ambiguous: ["/docker/<id>"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewMatchers(tc.patterns)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewMatchers(%q) = %v, want %q", tc.patterns, err, tc.want)
			}
		})
	}
}

func TestMatchersContainerID(t *testing.T) {
	m, err := NewMatchers([]string{"/docker/<id>"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		paths []string
		id    string
		err   string
	}{
		{"none", []string{"/user.slice", "/"}, "", ""},
		{"agree", []string{"/docker/abc", "/", "/docker/abc"}, "abc", ""},
		{"disagree", []string{"/docker/abc", "/docker/def"}, "", "multiple container IDs found in cgroups (abc, def)"},
		{"empty", []string{"/docker/"}, "", "a pattern matched, but no container id was found"},
		// As SPIRE: an empty match so far gives way to the next one.
		{"empty then id", []string{"/docker/", "/docker/abc"}, "abc", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := m.containerID(tc.paths)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %q, %v; want error %q", id, err, tc.err)
			case tc.err == "" && (err != nil || id != tc.id):
				t.Fatalf("got %q, %v; want %q", id, err, tc.id)
			}
		})
	}
}
