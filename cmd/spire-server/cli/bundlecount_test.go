package cli

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/servertest"
)

// TestBundleCountAgainstServer counts on a real server: its own bundle,
// then one more after a federated bundle is set through the CLI.
func TestBundleCountAgainstServer(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	code, stdout, stderr := runMain("bundle", "count", "-socketPath", s.Socket)
	if code != 0 || stdout != "1 bundle\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	ca, _ := newCA(t, "federated")
	path := filepath.Join(t.TempDir(), "fed.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runMain("bundle", "set", "-id", "spiffe://other.org", "-path", path, "-socketPath", s.Socket); code != 0 {
		t.Fatalf("bundle set: exit %d, %s", code, stderr)
	}
	code, stdout, stderr = runMain("bundle", "count", "-socketPath", s.Socket)
	if code != 0 || stdout != "2 bundles\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runMain("bundle", "count", "-output", "json", "-socketPath", s.Socket)
	if code != 0 {
		t.Fatalf("json: exit %d", code)
	}
	requireJSONEq(t, `{"count":2}`, stdout)
}
