package attestsim

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestStart: every provider starts, names its plugin in both blocks and
// in the agent ID, and every file its configuration names exists. The
// end-to-end tests (test/e2e) run the blocks through the real binaries.
func TestStart(t *testing.T) {
	quotedPath := regexp.MustCompile(`"(/[^"]+)"`)
	for _, p := range Providers {
		t.Run(p, func(t *testing.T) {
			dir := t.TempDir()
			n, err := Start(p, dir)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			head := `NodeAttestor "` + n.Plugin + `" {`
			if !strings.HasPrefix(n.ServerBlock, head) || !strings.HasPrefix(n.AgentBlock, head) {
				t.Fatalf("blocks do not open with %s:\n%s\n%s", head, n.ServerBlock, n.AgentBlock)
			}
			if want := "spiffe://example.org/spire/agent/" + n.Plugin + "/"; !strings.HasPrefix(n.AgentID("example.org"), want) {
				t.Fatalf("agent ID %s, want prefix %s", n.AgentID("example.org"), want)
			}
			for _, m := range quotedPath.FindAllStringSubmatch(n.ServerBlock+n.AgentBlock, -1) {
				if _, err := os.Stat(m[1]); err != nil {
					t.Errorf("configuration names a missing file: %v", err)
				}
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := Start("openstack", t.TempDir()); err == nil {
		t.Fatal("an unknown provider started")
	}
}
