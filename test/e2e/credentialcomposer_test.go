package e2e

import (
	"context"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestExternalCredentialComposer: a server configured with the test
// CredentialComposer plugin (test/plugins/credentialcomposer) issues
// workload SVIDs that carry its marks, the DNS SAN composed.test and the
// JWT claim "composed": true, and still verify against the bundle the
// workload fetched.
func TestExternalCredentialComposer(t *testing.T) {
	t.Parallel()
	const (
		workload    = "spiffe://example.org/composed/workload"
		composedDNS = "composed.test" // test/plugins/credentialcomposer.ComposedDNSSAN
		claim       = "composed"      // test/plugins/credentialcomposer.ComposedClaim
	)
	s := startServerConf(t, serverConfig{
		nodeAttestor: joinTokenAttestor,
		plugins:      externalBlock(t, "CredentialComposer", "ext_cc", "credentialcomposer", ""),
	})
	if n := len(childPIDs(pluginPIDs(t, "credentialcomposer"), s.proc.Pid())); n != 1 {
		t.Fatalf("server runs %d credential composer processes, want 1", n)
	}
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", workload,
		"-selector", uidSelector, "-dns", "workload.example.org")
	a := startAgent(t, s, token)
	c := newClient(t, a)

	x := fetchX509(t, c, workload)
	var svid *x509svid.SVID
	for _, sv := range x.SVIDs {
		if sv.ID.String() == workload {
			svid = sv
		}
	}
	leaf := svid.Certificates[0]
	if want := []string{"workload.example.org", composedDNS}; !slices.Equal(leaf.DNSNames, want) {
		t.Fatalf("DNS SANs %v, want %v", leaf.DNSNames, want)
	}
	if leaf.Subject.CommonName != "workload.example.org" {
		t.Errorf("CN %q, want the entry's first DNS name", leaf.Subject.CommonName)
	}
	if id, _, err := x509svid.Verify(svid.Certificates, x.Bundles); err != nil || id.String() != workload {
		t.Fatalf("composed SVID does not verify as %s: %s, %v", workload, id, err)
	}

	ctx := context.Background()
	jwt, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwtsvid.ParseAndValidate(jwt.Marshal(), bundles, []string{"db"})
	if err != nil {
		t.Fatalf("go-spiffe refuses the composed JWT-SVID: %v", err)
	}
	if parsed.ID.String() != workload || parsed.Claims[claim] != true {
		t.Fatalf("JWT-SVID for %s with claims %v, want %s with %q: true", parsed.ID, parsed.Claims, workload, claim)
	}
	if _, err := c.ValidateJWTSVID(ctx, jwt.Marshal(), "db"); err != nil {
		t.Fatalf("the agent refuses the composed JWT-SVID: %v", err)
	}
}
