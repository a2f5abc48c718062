package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// taintDeadline bounds how long after a taint every workload must hold an
// SVID from the new authority: the agent syncs every 500 ms here, so this
// is slack for a loaded machine, far below the hour an SVID lives before
// its half-life renewal.
const taintDeadline = 30 * time.Second

// authorityIDs reads the "Authority ID:" lines of a localauthority show,
// in the order Active, Prepared, Old ("" where none).
func authorityIDs(t *testing.T, out string) (active, prepared, old string) {
	t.Helper()
	ids := map[string]string{}
	section := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasSuffix(line, "authority:") && !strings.HasPrefix(line, " "):
			section = strings.Fields(line)[0]
		case strings.HasPrefix(line, "  Authority ID: "):
			ids[section] = strings.TrimPrefix(line, "  Authority ID: ")
		}
	}
	return ids["Active"], ids["Prepared"], ids["Old"]
}

// oneID reads the single "Authority ID:" of a prepare/activate/taint.
func oneID(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "  Authority ID: "); ok {
			return v
		}
	}
	t.Fatalf("no authority ID in %q", out)
	return ""
}

// signedBy reports whether an SVID's leaf was signed by the CA with this
// authority ID (hex subject key ID).
func signedBy(svid *x509svid.SVID, authorityID string) bool {
	return hex.EncodeToString(svid.Certificates[0].AuthorityKeyId) == authorityID
}

// TestForcedX509Rotation is the operator's forced rotation of a
// compromised X.509 CA: prepare a successor, activate it, taint the old
// one, and every workload holds an SVID from the new CA within seconds,
// pushed on its open stream; revoke it, and the old root is gone from the
// workloads' bundle.
func TestForcedX509Rotation(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	ids := []string{"spiffe://example.org/la-a", "spiffe://example.org/la-b", "spiffe://example.org/la-c"}
	for _, id := range ids {
		s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", id, "-selector", uidSelector)
	}
	a := startAgent(t, s, token)
	td := spiffeid.RequireTrustDomainFromString("example.org")

	first, prepared, old := authorityIDs(t, s.cli(t, "localauthority", "x509", "show"))
	if first == "" || prepared != "" || old != "" {
		t.Fatalf("initial state: active %q prepared %q old %q", first, prepared, old)
	}

	// Two workloads with open watches, each holding every SVID from the
	// first CA.
	type stream struct{ w *watcher }
	var streams []stream
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		c := newClient(t, a)
		fetchX509(t, c, ids[len(ids)-1])
		w := &watcher{updates: make(chan *workloadapi.X509Context, 256), errs: make(chan error, 256)}
		go func() { _ = c.WatchX509Context(ctx, w) }()
		streams = append(streams, stream{w})
	}
	// waitAll waits, on every stream, for an update that satisfies ok.
	waitAll := func(what string, timeout time.Duration, ok func(x *workloadapi.X509Context) error) {
		t.Helper()
		deadline := time.After(timeout)
		for i, st := range streams {
			var last error
			for done := false; !done; {
				select {
				case x := <-st.w.updates:
					if last = ok(x); last == nil {
						done = true
					}
				case err := <-st.w.errs:
					t.Logf("stream %d: watch error: %v", i, err)
				case <-deadline:
					t.Fatalf("stream %d: %s not within %v: %v", i, what, timeout, last)
				}
			}
		}
	}
	allFrom := func(authorityID string) func(x *workloadapi.X509Context) error {
		return func(x *workloadapi.X509Context) error {
			if len(x.SVIDs) != len(ids) {
				return fmt.Errorf("%d SVIDs", len(x.SVIDs))
			}
			for _, sv := range x.SVIDs {
				if !signedBy(sv, authorityID) {
					return fmt.Errorf("%s signed by %x", sv.ID, sv.Certificates[0].AuthorityKeyId)
				}
				if _, _, err := x509svid.Verify(sv.Certificates, x.Bundles); err != nil {
					return fmt.Errorf("%s does not verify against the bundle sent with it: %v", sv.ID, err)
				}
			}
			return nil
		}
	}
	waitAll("every SVID from the first CA", 20*time.Second, allFrom(first))

	next := oneID(t, s.cli(t, "localauthority", "x509", "prepare"))
	if next == first {
		t.Fatal("prepare returned the active authority")
	}
	// The prepared CA reaches the workloads' bundle before it signs.
	waitAll("the prepared CA in the bundle", taintDeadline, func(x *workloadapi.X509Context) error {
		b, err := x.Bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			return err
		}
		if len(b.X509Authorities()) < 2 {
			return fmt.Errorf("%d authorities", len(b.X509Authorities()))
		}
		return allFrom(first)(x)
	})
	if got := oneID(t, s.cli(t, "localauthority", "x509", "activate", "-authorityID", next)); got != next {
		t.Fatalf("activated %q, want %q", got, next)
	}
	active, _, old := authorityIDs(t, s.cli(t, "localauthority", "x509", "show"))
	if active != next || old != first {
		t.Fatalf("after activate: active %q old %q", active, old)
	}

	// Untainted, the old CA cannot be revoked.
	if r := cli(t, s.dir, "spire-server", "localauthority", "x509", "revoke", "-authorityID", first, "-socketPath", s.socket); r.code != 1 ||
		!strings.Contains(r.stderr, "it is not possible to revoke an untainted root CA") {
		t.Fatalf("revoke before taint: exit %d, %s", r.code, r.stderr)
	}

	tainted := time.Now()
	s.cli(t, "localauthority", "x509", "taint", "-authorityID", first)
	waitAll("every SVID re-signed by the new CA", taintDeadline, allFrom(next))
	t.Logf("every workload held SVIDs from the new CA %v after the taint", time.Since(tainted).Round(time.Millisecond))
	// The agent replaced its own SVID too, not at half-life.
	eventually(t, taintDeadline, "the agent renewing its tainted SVID", func() error {
		if !strings.Contains(a.proc.out.String(), "Agent SVID chains to a tainted X.509 authority") {
			return errString("not yet")
		}
		return nil
	})

	s.cli(t, "localauthority", "x509", "revoke", "-authorityID", first)
	waitAll("the old root gone from the bundle", taintDeadline, func(x *workloadapi.X509Context) error {
		b, err := x.Bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			return err
		}
		for _, c := range b.X509Authorities() {
			if hex.EncodeToString(c.SubjectKeyId) == first {
				return errString("old root still in the bundle")
			}
		}
		return allFrom(next)(x)
	})
	// The agent carries on with the new CA.
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/la-after", "-selector", uidSelector)
	c := newClient(t, a)
	x := fetchX509(t, c, "spiffe://example.org/la-after")
	for _, sv := range x.SVIDs {
		if !signedBy(sv, next) {
			t.Fatalf("%s not from the new CA after revoke", sv.ID)
		}
	}
	if done, code := a.proc.exited(); done {
		t.Fatalf("agent exited with %d", code)
	}
}

// jwtKeyID returns the kid a JWT-SVID was signed with.
func jwtKeyID(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

// TestForcedJWTRotation: a workload's cached JWT-SVID signed by a key that
// is then tainted is minted again, and the revoked key leaves the JWT
// bundle the workload sees.
func TestForcedJWTRotation(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/jwt-la", "-selector", uidSelector)
	a := startAgent(t, s, token)
	c := newClient(t, a)
	fetchX509(t, c, "spiffe://example.org/jwt-la")
	fetchJWT := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "la-test"})
		if err != nil {
			t.Fatal(err)
		}
		return svid.Marshal()
	}

	first, _, _ := authorityIDs(t, s.cli(t, "localauthority", "jwt", "show"))
	before := fetchJWT()
	if kid := jwtKeyID(t, before); kid != first {
		t.Fatalf("JWT-SVID kid %q, want the active authority %q", kid, first)
	}
	next := oneID(t, s.cli(t, "localauthority", "jwt", "prepare"))
	s.cli(t, "localauthority", "jwt", "activate", "-authorityID", next)
	// Until the taint the agent hands out the cached token, as SPIRE's
	// does (it is valid and not past half-life); the taint is what makes
	// it mint a new one.
	if kid := jwtKeyID(t, fetchJWT()); kid != first {
		t.Fatalf("before the taint the cached JWT-SVID has kid %q, want %q", kid, first)
	}
	s.cli(t, "localauthority", "jwt", "taint", "-authorityID", first)
	eventually(t, taintDeadline, "a JWT-SVID from the new key", func() error {
		if kid := jwtKeyID(t, fetchJWT()); kid != next {
			return fmt.Errorf("kid %q", kid)
		}
		return nil
	})
	s.cli(t, "localauthority", "jwt", "revoke", "-authorityID", first)
	eventually(t, taintDeadline, "the revoked key gone from the JWT bundle", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		set, err := c.FetchJWTBundles(ctx)
		if err != nil {
			return err
		}
		b, err := set.GetJWTBundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
		if err != nil {
			return err
		}
		if _, ok := b.FindJWTAuthority(first); ok {
			return errString("still there")
		}
		if _, ok := b.FindJWTAuthority(next); !ok {
			return errString("new key missing")
		}
		return nil
	})
}
