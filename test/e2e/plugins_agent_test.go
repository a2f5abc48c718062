package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExternalWorkloadAttestorRestart kills an agent's external workload
// attestor while the agent serves: workloads keep getting the SVIDs the
// built-in attestor's selectors earn, the agent restarts the plugin, and the
// SVID that needs the plugin's selectors comes back.
func TestExternalWorkloadAttestorRestart(t *testing.T) {
	t.Parallel()
	s := startServerConf(t, serverConfig{nodeAttestor: joinTokenAttestor})
	token := s.token(t, "spiffe://example.org/node")
	unixID, extID := "spiffe://example.org/by-unix", "spiffe://example.org/by-plugin"
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", unixID, "-selector", uidSelector)
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", extID, "-selector", "ext_wl:label:restart")
	a := newAgent(t, s, agentConfig{
		nodeAttestor:     joinTokenAttestor,
		workloadAttestor: unixAttestor("") + "\n    " + externalBlock(t, "WorkloadAttestor", "ext_wl", "workloadattestor", `label = "restart"`),
	})
	a.start(t, token)
	c := newClient(t, a)
	fetchX509(t, c, extID)

	plugins := childPIDs(pluginPIDs(t, "workloadattestor"), a.proc.Pid())
	if len(plugins) != 1 {
		t.Fatalf("agent runs %d workload attestor plugins, want 1", len(plugins))
	}
	if err := syscall.Kill(plugins[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Until the plugin is back, the unix attestor alone still earns its
	// SVID: nothing that does not depend on the plugin stops.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	x, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatalf("fetch while the plugin is down: %v", err)
	}
	if ids := svidIDs(t, x); !slices.Contains(ids, unixID) {
		t.Fatalf("while the plugin is down the workload got %q, want %s among them", ids, unixID)
	}
	eventually(t, 20*time.Second, "the plugin restarted", func() error {
		if !strings.Contains(a.proc.out.String(), `msg="Plugin restarted"`) {
			return errString("no restart logged")
		}
		return nil
	})
	fetchX509(t, c, extID)
	if !strings.Contains(a.proc.out.String(), "plugin_name=ext_wl") {
		t.Error("the plugin's failure is not logged with its name")
	}
}

// TestExternalSVIDStore: an entry with storeSVID is not served on the
// Workload API; the agent hands its SVID to the SVIDStore plugin its
// selectors name, as SPIRE does.
func TestExternalSVIDStore(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	s := startServerConf(t, serverConfig{nodeAttestor: joinTokenAttestor})
	token := s.token(t, "spiffe://example.org/node")
	stored := "spiffe://example.org/stored"
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", stored, "-storeSVID",
		"-selector", "ext_store:name:db-credentials", "-selector", "ext_store:region:local")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/served", "-selector", uidSelector)
	a := newAgent(t, s, agentConfig{
		nodeAttestor:     joinTokenAttestor,
		workloadAttestor: unixAttestor("") + "\n    " + externalBlock(t, "SVIDStore", "ext_store", "svidstore", fmt.Sprintf("dir = %q", dir)),
	})
	a.start(t, token)

	var rec struct {
		SPIFFEID        string   `json:"spiffe_id"`
		Metadata        []string `json:"metadata"`
		CertChainSHA256 []string `json:"cert_chain_sha256"`
		ExpiresAt       int64    `json:"expires_at"`
	}
	eventually(t, 20*time.Second, "the stored SVID", func() error {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		if len(files) != 1 {
			return errString(fmt.Sprintf("%d stored SVIDs", len(files)))
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &rec)
	})
	slices.Sort(rec.Metadata)
	if rec.SPIFFEID != stored || !slices.Equal(rec.Metadata, []string{"name:db-credentials", "region:local"}) ||
		len(rec.CertChainSHA256) == 0 || rec.ExpiresAt <= time.Now().Unix() {
		t.Fatalf("stored record %+v", rec)
	}
	x := fetchX509(t, newClient(t, a), "spiffe://example.org/served")
	if ids := svidIDs(t, x); slices.Contains(ids, stored) {
		t.Fatalf("a storeSVID entry reached the Workload API: %q", ids)
	}
}
