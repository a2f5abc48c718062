package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestCARotationAndAgentRenewal runs a server whose CA lives 60 s and whose
// agent SVIDs live 20 s. The workload must see the next CA published in its
// bundle before any SVID chains to it, then receive SVIDs from the new CA,
// while the agent renews its own SVID several times and keeps syncing.
func TestCARotationAndAgentRenewal(t *testing.T) {
	t.Parallel()
	s := startServer(t, `ca_ttl = "60s"
    default_x509_svid_ttl = "10s"
    agent_ttl = "20s"`)
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/rotating", "-selector", uidSelector)
	a := startAgent(t, s, token)
	c := newClient(t, a)
	first := fetchX509(t, c, "spiffe://example.org/rotating")
	firstCA := first.SVIDs[0].Certificates[0].AuthorityKeyId

	w := &watcher{updates: make(chan *workloadapi.X509Context, 256), errs: make(chan error, 256)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.WatchX509Context(ctx, w)

	sawTwoCAs, sawNewCA := false, false
	deadline := time.After(120 * time.Second)
	for !sawNewCA {
		select {
		case x := <-w.updates:
			b, err := x.Bundles.GetX509BundleForTrustDomain(first.SVIDs[0].ID.TrustDomain())
			if err != nil {
				t.Fatal(err)
			}
			if len(b.X509Authorities()) >= 2 {
				sawTwoCAs = true
			}
			for _, svid := range x.SVIDs {
				if _, _, err := x509svid.Verify(svid.Certificates, x.Bundles); err != nil {
					t.Fatalf("an SVID on the stream does not verify against the bundle sent with it: %v", err)
				}
				if !bytes.Equal(svid.Certificates[0].AuthorityKeyId, firstCA) {
					if !sawTwoCAs {
						t.Fatal("an SVID from the new CA arrived before the new CA was in the workload's bundle")
					}
					sawNewCA = true
				}
			}
		case err := <-w.errs:
			t.Logf("watch error: %v", err)
		case <-deadline:
			t.Fatalf("no SVID from a rotated CA within 120s (saw next CA in bundle: %v)", sawTwoCAs)
		}
	}

	// The agent renewed its 20 s SVID several times meanwhile; it still syncs.
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/after-rotation", "-selector", uidSelector)
	fetchX509(t, c, "spiffe://example.org/after-rotation")
	if done, code := a.proc.exited(); done {
		t.Fatalf("agent exited with %d", code)
	}
}
