package docker

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
)

// FuzzMatchers: container_id_cgroup_matchers come from configuration and
// cgroup paths from any process on the host. Parsing never panics, and a
// match is exactly what the pattern language says.
func FuzzMatchers(f *testing.F) {
	f.Add("/docker/<id>", "/my.slice/*/<id>/*", "/docker/0123abcd")
	f.Add("/a/b/<id>", "/*/b/<id>", "/a/b/c")
	f.Add("<id>", "*", "")
	f.Add("/kubepods/*/pod*/<id>", "/x/<id>/y", "/kubepods/besteffort/pod1/abc")
	f.Fuzz(func(t *testing.T, p1, p2, path string) {
		m, err := NewMatchers([]string{p1, p2})
		if err != nil {
			return
		}
		id, ok := m.Find(path)
		if !ok {
			return
		}
		if strings.Contains(id, "/") {
			t.Fatalf("Find(%q) with %q, %q: id %q spans components", path, p1, p2, id)
		}
		// Exactly one pattern may match (they are not ambiguous), and it
		// has as many components as the path.
		n := 0
		for _, p := range []string{p1, p2} {
			if _, ok := match(strings.Split(p, "/"), strings.Split(path, "/")); ok {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("Find(%q): %d of %q, %q match, want 1", path, n, p1, p2)
		}
	})
}

// FuzzSelectorValues: an engine's inspect answer is decoded by the client
// library and turned into selectors here. Whatever it holds, the result is
// well-formed selector values or an error, never a panic.
func FuzzSelectorValues(f *testing.F) {
	f.Add([]byte(`{"Id":"abc","State":{"Running":true},"Config":{"Image":"sha256:1","Labels":{"a":"b"},"Env":["K=V"]}}`))
	f.Add([]byte(`{"Config":null}`))
	f.Add([]byte(`{"Config":{"Labels":{"":""},"Env":[""]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var resp container.InspectResponse
		if err := json.Unmarshal(b, &resp); err != nil {
			return
		}
		vals, err := selectorValues(resp)
		if err != nil {
			return
		}
		want := len(resp.Config.Labels) + len(resp.Config.Env)
		if resp.Config.Image != "" {
			want++
		}
		if len(vals) != want {
			t.Fatalf("%d values for %d labels, %d env and image %q", len(vals), len(resp.Config.Labels), len(resp.Config.Env), resp.Config.Image)
		}
		for _, v := range vals {
			if !strings.HasPrefix(v, "label:") && !strings.HasPrefix(v, "env:") && !strings.HasPrefix(v, "image_id:") {
				t.Fatalf("value %q has no known sub-selector", v)
			}
		}
	})
}
