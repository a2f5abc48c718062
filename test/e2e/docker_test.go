package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/dockerd"
)

const svidClientPkg = "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"

// dockerAttestor is the docker WorkloadAttestor block for the daemon at
// host.
func dockerAttestor(host string) string {
	return fmt.Sprintf(`WorkloadAttestor "docker" {
        plugin_data {
            docker_socket_path = %q
        }
    }`, host)
}

// TestDockerAttestor: the real agent, attesting with the docker and unix
// workload attestors against a private dockerd, issues SVIDs to a go-spiffe
// client inside containers by their labels, refuses a container with other
// labels, and merges both attestors' selectors: an entry needing a label
// and uid 0 is issued to that container as root only, and never to a host
// process, which has the uid but no label.
func TestDockerAttestor(t *testing.T) {
	d := dockerd.Start(t)
	img := d.Image(t, map[string]string{"/svid-client": svidClientPkg})

	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/labelled",
		"-selector", "docker:label:app:e2e")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/combined",
		"-selector", "docker:label:app:combo", "-selector", "unix:uid:0")
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor,
		workloadAttestor: dockerAttestor(d.Host) + "\n    " + unixAttestor("")})
	a.start(t, token)
	// The containers reach the socket through the agent's directory,
	// mounted read-only; a non-root one needs to traverse it.
	if err := os.Chmod(a.dir, 0o711); err != nil {
		t.Fatal(err)
	}

	fetch := func(labels map[string]string, user string) (int, string) {
		t.Helper()
		return d.RunToExit(t, dockerd.RunOptions{
			Image:  img,
			Cmd:    []string{"/svid-client", "-socket", "/run/spire/agent.sock"},
			Labels: labels,
			User:   user,
			Binds:  []string{a.dir + ":/run/spire:ro"},
		})
	}

	// Until the agent has synced its entries, the first fetches are denied.
	eventually(t, 30*time.Second, "an SVID for the labelled container", func() error {
		if code, out := fetch(map[string]string{"app": "e2e"}, ""); code != 0 || strings.TrimSpace(out) != "spiffe://example.org/labelled" {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})

	for _, tc := range []struct {
		name   string
		labels map[string]string
		user   string
		want   string // the SPIFFE ID, or empty for PermissionDenied
	}{
		{name: "other labels", labels: map[string]string{"app": "other", "tier": "e2e"}},
		{name: "no labels"},
		{name: "label and uid", labels: map[string]string{"app": "combo"}, want: "spiffe://example.org/combined"},
		{name: "label without the uid", labels: map[string]string{"app": "combo"}, user: "1234:1234"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := fetch(tc.labels, tc.user)
			switch {
			case tc.want != "" && (code != 0 || strings.TrimSpace(out) != tc.want):
				t.Errorf("exit %d, output %q; want %s", code, out, tc.want)
			case tc.want == "" && (code != 1 || !strings.Contains(out, "code = PermissionDenied")):
				t.Errorf("exit %d, output %q; want PermissionDenied", code, out)
			}
		})
	}

	// This test runs as root, so it has unix:uid:0 but no container.
	if r := cli(t, a.dir, "spire-agent", "api", "fetch", "x509", "-socketPath", a.socket); r.code == 0 {
		t.Errorf("a host process got an SVID meant for a container:\n%s", r.stdout)
	}
}
