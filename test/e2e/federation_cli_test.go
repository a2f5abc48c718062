package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fedCLIServer runs a join-token server of trust domain td whose server
// block holds extra (a federation block); startServerConf's servers are
// all example.org.
func fedCLIServer(t *testing.T, td, extra string) *serverEnv {
	t.Helper()
	dir := shortTempDir(t)
	s := &serverEnv{dir: dir, socket: filepath.Join(dir, "server.sock"), conf: filepath.Join(dir, "server.conf"), port: freePort(t)}
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "DEBUG"
    %s
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    %s
}
`, s.port, s.socket, td, filepath.Join(dir, "data"), extra, filepath.Join(dir, "data/datastore.sqlite3"), joinTokenAttestor)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// fedCLIFails runs a spire-server command against s that must exit 1 and
// returns its stderr.
func fedCLIFails(t *testing.T, s *serverEnv, args ...string) string {
	t.Helper()
	r := cli(t, s.dir, "spire-server", append(args, "-socketPath", s.socket)...)
	if r.code != 1 {
		t.Fatalf("spire-server %s: exit %d, want 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stderr
}

// TestFederationCLI drives spire-server federation against the real
// binaries: example.org's relationships are created, shown, listed,
// updated and deleted with SPIRE's output, and a refresh fetches b.org's
// bundle from b.org's real bundle endpoint (https_spiffe, authenticated
// with the bundle given at create), while refreshes without a
// relationship or with an unreachable endpoint fail in SPIRE's words.
func TestFederationCLI(t *testing.T) {
	t.Parallel()
	endpointPort := freePort(t)
	b := fedCLIServer(t, "b.org", fmt.Sprintf(`federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = %d
            profile "https_spiffe" {}
        }
    }`, endpointPort))
	a := fedCLIServer(t, "example.org", "")

	// b.org's X.509 authorities only: after a refresh, a.org holds its
	// JWT authorities too.
	bundlePath := filepath.Join(a.dir, "b.pem")
	if err := os.WriteFile(bundlePath, []byte(b.cli(t, "bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", endpointPort)
	out := a.cli(t, "federation", "create", "-trustDomain", "b.org", "-bundleEndpointURL", endpoint,
		"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://b.org/spire/server", "-trustDomainBundlePath", bundlePath)
	wantB := fmt.Sprintf("Trust domain              : b.org\nBundle endpoint URL       : %s\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://b.org/spire/server\n", endpoint)
	if out != "\n"+wantB {
		t.Fatalf("create:\n%q\nwant\n%q", out, "\n"+wantB)
	}
	dead := fmt.Sprintf("https://127.0.0.1:%d/bundle", freePort(t))
	data := filepath.Join(a.dir, "rel.json")
	if err := os.WriteFile(data, []byte(fmt.Sprintf(`{"federationRelationships":[{"trustDomain":"c.org","bundleEndpointURL":%q,"bundleEndpointProfile":"https_web"}]}`, dead)), 0o644); err != nil {
		t.Fatal(err)
	}
	wantC := fmt.Sprintf("Trust domain              : c.org\nBundle endpoint URL       : %s\nBundle endpoint profile   : https_web\n", dead)
	if out := a.cli(t, "federation", "create", "-data", data); out != "\n"+wantC {
		t.Fatalf("create -data:\n%q", out)
	}
	if errs := fedCLIFails(t, a, "federation", "create", "-trustDomain", "example.org", "-bundleEndpointURL", "https://example.org/b", "-bundleEndpointProfile", "https_web"); errs !=
		"Failed to create the following federation relationship (code: InvalidArgument, msg: \"unable to create federation relationship for server trust domain\"):\n"+
			"Trust domain              : example.org\nBundle endpoint URL       : https://example.org/b\nBundle endpoint profile   : https_web\n"+
			"Error: failed to create one or more federation relationships\n" {
		t.Fatalf("own trust domain: %q", errs)
	}

	if out := a.cli(t, "federation", "list"); out != "Found 2 federation relationships\n\n"+wantB+"\n"+wantC {
		t.Fatalf("list:\n%q", out)
	}
	if out := a.cli(t, "federation", "show", "-trustDomain", "b.org"); out != "Found a federation relationship with trust domain b.org:\n\n"+wantB {
		t.Fatalf("show:\n%q", out)
	}

	if out := a.cli(t, "federation", "refresh", "-id", "b.org"); out != "Bundle refreshed\n" {
		t.Fatalf("refresh: %q", out)
	}
	var shown struct {
		TrustDomainBundle struct {
			JWTAuthorities []struct {
				KeyID string `json:"key_id"`
			} `json:"jwt_authorities"`
		} `json:"trust_domain_bundle"`
	}
	if err := json.Unmarshal([]byte(a.cli(t, "federation", "show", "-trustDomain", "b.org", "-output", "json")), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.TrustDomainBundle.JWTAuthorities) == 0 {
		t.Fatal("after a refresh, b.org's bundle has no JWT authorities: it was not fetched from b.org's endpoint")
	}
	if errs := fedCLIFails(t, a, "federation", "refresh", "-id", "c.org"); !strings.HasPrefix(errs, "Error: failed to refresh bundle: rpc error: code = Internal desc = failed to refresh bundle: ") {
		t.Fatalf("refresh of an unreachable endpoint: %q", errs)
	}
	if errs := fedCLIFails(t, a, "federation", "refresh", "-id", "spiffe://none.org"); errs != "Error: there is no federation relationship with trust domain \"spiffe://none.org\"\n" {
		t.Fatalf("refresh without relationship: %q", errs)
	}

	moved := fmt.Sprintf("https://127.0.0.1:%d/moved", freePort(t))
	out = a.cli(t, "federation", "update", "-trustDomain", "c.org", "-bundleEndpointURL", moved, "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://c.org/spire/server")
	if want := fmt.Sprintf("\nTrust domain              : c.org\nBundle endpoint URL       : %s\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://c.org/spire/server\n", moved); out != want {
		t.Fatalf("update:\n%q\nwant\n%q", out, want)
	}
	if out := a.cli(t, "federation", "delete", "-id", "c.org"); out != "federation relationship deleted.\n" {
		t.Fatalf("delete: %q", out)
	}
	if errs := fedCLIFails(t, a, "federation", "delete", "-id", "c.org"); errs != "Error: failed to delete federation relationship \"c.org\": federation relationship not found\n" {
		t.Fatalf("delete again: %q", errs)
	}
	if errs := fedCLIFails(t, a, "federation", "show", "-trustDomain", "c.org"); errs != "Error: error showing federation relationship: rpc error: code = NotFound desc = federation relationship does not exist\n" {
		t.Fatalf("show deleted: %q", errs)
	}
	if out := a.cli(t, "federation", "list"); out != "Found 1 federation relationship\n\n"+wantB {
		t.Fatalf("list after delete:\n%q", out)
	}
	// The relationship's bundle outlives it, as in SPIRE.
	if out := a.cli(t, "federation", "delete", "-id", "b.org"); out != "federation relationship deleted.\n" {
		t.Fatalf("delete b.org: %q", out)
	}
	if out := a.cli(t, "bundle", "list", "-id", "spiffe://b.org"); !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("b.org's bundle: %q", out)
	}
}
