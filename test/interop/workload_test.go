package interop

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const audience = "spiffe://example.org/interop-audience"

var uidSelector = "unix:uid:" + strconv.Itoa(os.Getuid())

// issued is what a workload received, reduced to what must not depend on
// which server issued it, so that runs against both servers compare.
type issued struct {
	svid   []string // shape of each certificate of the X.509-SVID chain
	bundle []string // shape of each X.509 authority in the bundle
	jwt    string   // shape of the JWT-SVID
	// upstream spire-agent CLI output against the agent, masked
	agentCLI []string
}

// TestWorkloadIdentity runs the same workload flow across implementations:
// (1) an upstream agent attests to our server with a join token and serves
// the SVIDs our server issued; (2) our agent attests to an upstream server
// and serves its SVIDs. A go-spiffe client verifies each. A third run,
// upstream on both sides, is the reference the other two are compared to.
func TestWorkloadIdentity(t *testing.T) {
	results := map[string]issued{}
	for _, tc := range []struct {
		name          string
		server, agent *impl
	}{
		{"upstream-agent/our-server", &ours, &upstream},
		{"our-agent/upstream-server", &upstream, &ours},
		{"upstream-agent/upstream-server", &upstream, &upstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results[tc.name] = workloadFlow(t, *tc.server, *tc.agent)
		})
	}
	ref, ok := results["upstream-agent/upstream-server"]
	if !ok {
		return
	}
	for name, got := range results {
		if name == "upstream-agent/upstream-server" {
			continue
		}
		compareIssued(t, name, got, ref)
	}
}

func workloadFlow(t *testing.T, serverImpl, agentImpl impl) issued {
	s := startServer(t, serverImpl)
	node := "spiffe://example.org/node"
	workload := "spiffe://example.org/workload"
	tok := s.token(t, serverImpl, node)
	s.cli(t, serverImpl, "entry", "create", "-parentID", node, "-spiffeID", workload,
		"-selector", uidSelector, "-dns", "workload.example.org")

	a := startAgent(t, agentImpl, s, tok)
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	x := fetchX509(t, c, workload)
	svid := x.DefaultSVID()
	if _, _, err := x509svid.Verify(svid.Certificates, x.Bundles); err != nil {
		t.Fatalf("X.509-SVID does not verify against the fetched bundle: %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	b, err := x.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatal(err)
	}
	// The Workload API bundle is the server's bundle.
	if want := pemCerts(t, s.cli(t, serverImpl, "bundle", "show")); !sameCerts(b.X509Authorities(), want) {
		t.Errorf("Workload API bundle differs from the server's `bundle show`")
	}

	// The agent's own identity is the join-token one, as the server sees it.
	agents := s.cli(t, serverImpl, "agent", "list")
	if wantAgent := "spiffe://example.org/spire/agent/join_token/" + tok; !strings.Contains(agents, wantAgent) {
		t.Errorf("agent list lacks %s:\n%s", wantAgent, agents)
	}

	// JWT-SVID round trip: fetch, validate locally with the fetched JWT
	// bundles and through the agent's ValidateJWTSVID.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if js.ID.String() != workload {
		t.Errorf("JWT-SVID for %s, want %s", js.ID, workload)
	}
	jb, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	parsed, err := jwtsvid.ParseAndValidate(js.Marshal(), jb, []string{audience})
	if err != nil {
		t.Fatalf("JWT-SVID does not validate against the fetched JWT bundle: %v", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, js.Marshal(), audience); err != nil {
		t.Errorf("agent ValidateJWTSVID: %v", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, js.Marshal(), "spiffe://example.org/other"); err == nil {
		t.Errorf("agent ValidateJWTSVID accepted a token for another audience")
	}

	cliOut := agentCLIs(t, a, workload, js.Marshal())
	out := issued{jwt: jwtShape(t, js.Marshal(), parsed), agentCLI: cliOut}
	for _, cert := range svid.Certificates {
		out.svid = append(out.svid, certShape(cert))
	}
	for _, cert := range b.X509Authorities() {
		out.bundle = append(out.bundle, certShape(cert))
	}

	t.Logf("X.509-SVID chain:\n  %s\nbundle:\n  %s\nJWT-SVID: %s", strings.Join(out.svid, "\n  "), strings.Join(out.bundle, "\n  "), out.jwt)

	// A restarted agent comes back from its persisted SVID, without a new
	// token, and serves again.
	a.proc.stop()
	c.Close()
	a.start(t, "")
	c2, err := workloadapi.New(context.Background(), workloadapi.WithAddr(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	x2 := fetchX509(t, c2, workload)
	if _, _, err := x509svid.Verify(x2.DefaultSVID().Certificates, x2.Bundles); err != nil {
		t.Fatalf("after agent restart: %v", err)
	}
	return out
}

// fetchX509 retries until the agent serves an SVID for want: the first
// sync may still be in flight.
func fetchX509(t *testing.T, c *workloadapi.Client, want string) *workloadapi.X509Context {
	t.Helper()
	var got *workloadapi.X509Context
	eventually(t, 60*time.Second, "an X.509-SVID for "+want, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		x, err := c.FetchX509Context(ctx)
		if err != nil {
			return err
		}
		for _, s := range x.SVIDs {
			if s.ID.String() == want {
				got = x
				return nil
			}
		}
		return fmt.Errorf("%d SVIDs, none for %s", len(x.SVIDs), want)
	})
	return got
}

func pemCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("bundle show: %v", err)
		}
		out = append(out, c)
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

// certShape describes a certificate by what SPIRE decides (key and
// signature algorithms, usages, constraints, names, lifetime), leaving out
// keys, serials and times.
func certShape(c *x509.Certificate) string {
	var eku []string
	for _, u := range c.ExtKeyUsage {
		eku = append(eku, strconv.Itoa(int(u)))
	}
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	var exts []string
	for _, e := range c.Extensions {
		exts = append(exts, fmt.Sprintf("%s(critical=%v)", e.Id, e.Critical))
	}
	sort.Strings(exts)
	return strings.Join([]string{
		"pubkey=" + c.PublicKeyAlgorithm.String(),
		"sigalg=" + c.SignatureAlgorithm.String(),
		fmt.Sprintf("isCA=%v maxPathLen=%d zero=%v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero),
		fmt.Sprintf("keyUsage=%d extKeyUsage=%v", c.KeyUsage, eku),
		fmt.Sprintf("subject=%q", subjectShape(c)),
		fmt.Sprintf("dns=%v uris=%v", c.DNSNames, uris),
		"lifetime=" + c.NotAfter.Sub(c.NotBefore).Round(time.Minute).String(),
		fmt.Sprintf("ski=%v aki=%v", len(c.SubjectKeyId) > 0, len(c.AuthorityKeyId) > 0),
		"extensions=" + strings.Join(exts, ","),
	}, "\n  ")
}

// subjectShape is the subject without its unique serialNumber, which
// SPIRE puts in CA subjects.
func subjectShape(c *x509.Certificate) string {
	s := c.Subject
	s.SerialNumber = ""
	s.Names, s.ExtraNames = nil, nil
	return s.String()
}

// jwtShape describes a JWT-SVID by its header (alg, typ, which fields),
// claim names, audience and lifetime.
func jwtShape(t *testing.T, token string, s *jwtsvid.SVID) string {
	t.Helper()
	seg, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("JWT-SVID header: %v", err)
	}
	var hdr map[string]any
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatalf("JWT-SVID header: %v", err)
	}
	var hkeys []string
	for k := range hdr {
		hkeys = append(hkeys, k)
	}
	sort.Strings(hkeys)
	var keys []string
	for k := range s.Claims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ttl := time.Until(s.Expiry).Round(time.Minute)
	return fmt.Sprintf("header=%v alg=%v typ=%v claims=%v aud=%v ttl~%s", hkeys, hdr["alg"], hdr["typ"], keys, s.Audience, ttl)
}

func compareIssued(t *testing.T, name string, got, ref issued) {
	t.Helper()
	diff := func(what string, g, r []string) {
		if len(g) != len(r) {
			t.Errorf("%s: %s has %d certificates, upstream %d\n ours: %v\n upstream: %v", name, what, len(g), len(r), g, r)
			return
		}
		for i := range g {
			if g[i] != r[i] {
				t.Errorf("%s: %s certificate %d differs from upstream's:\n got:\n  %s\n upstream:\n  %s", name, what, i, g[i], r[i])
			}
		}
	}
	diff("X.509-SVID chain", got.svid, ref.svid)
	diff("bundle", got.bundle, ref.bundle)
	for i := range ref.agentCLI {
		if i < len(got.agentCLI) && got.agentCLI[i] != ref.agentCLI[i] {
			t.Errorf("%s: upstream spire-agent CLI output differs from upstream's:\n got:\n%s\n upstream:\n%s", name, got.agentCLI[i], ref.agentCLI[i])
		}
	}
	if got.jwt != ref.jwt {
		t.Errorf("%s: JWT-SVID differs from upstream's:\n got:      %s\n upstream: %s", name, got.jwt, ref.jwt)
	}
}

var (
	durationRE  = regexp.MustCompile(`after [0-9.]+[µmn]?s`)
	dateRE      = regexp.MustCompile(`\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[^\n]*`)
	jwtRE       = regexp.MustCompile(`[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}`)
	keyRE       = regexp.MustCompile(`"(x|y|kid)": ?"[^"]*"`)
	claimTimeRE = regexp.MustCompile(`"(exp|iat)":\d+`)
)

// agentCLIs runs both implementations' spire-agent CLI (healthcheck, api
// fetch x509 with -write, api fetch jwt, api validate jwt) against agent a
// and compares our CLI's output with upstream's, after masking times and
// keys. It returns upstream's, to compare across agents.
func agentCLIs(t *testing.T, a *agent, workload, token string) []string {
	t.Helper()
	outs := map[string][]string{}
	for _, cli := range []impl{upstream, ours} {
		dir := filepath.Join(a.dir, "write-"+cli.name)
		run := func(args ...string) string {
			r := runCLI(t, a.dir, cli.agent(), append(args, "-socketPath", a.socket)...)
			if r.code != 0 {
				t.Errorf("%s spire-agent %s against %s agent: exit %d\nstdout: %s\nstderr: %s", cli.name, strings.Join(args, " "), a.impl.name, r.code, r.stdout, r.stderr)
			}
			out := durationRE.ReplaceAllString(r.stdout+r.stderr, "after <d>")
			out = dateRE.ReplaceAllString(out, "<time>")
			out = jwtRE.ReplaceAllString(out, "<jwt>")
			out = strings.ReplaceAll(out, dir, "<dir>")
			out = claimTimeRE.ReplaceAllString(out, `"$1":<n>`)
			return keyRE.ReplaceAllString(out, `"$1": "<masked>"`)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		outs[cli.name] = []string{
			run("healthcheck"),
			run("api", "fetch", "x509", "-write", dir),
			run("api", "fetch", "jwt", "-audience", audience),
			run("api", "validate", "jwt", "-audience", audience, "-svid", token),
		}
		for _, f := range []string{"svid.0.pem", "svid.0.key", "bundle.0.pem"} {
			if !fileExists(filepath.Join(dir, f)) {
				t.Errorf("%s spire-agent api fetch x509 -write did not write %s", cli.name, f)
			}
		}
		if got := outs[cli.name][1]; !strings.Contains(got, workload) {
			t.Errorf("%s spire-agent api fetch x509 does not show %s:\n%s", cli.name, workload, got)
		}
	}
	for i := range outs[upstream.name] {
		if got, want := outs[ours.name][i], outs[upstream.name][i]; got != want {
			t.Errorf("spire-agent CLI output against %s agent differs from upstream CLI's:\n--- ours:\n%s\n--- upstream:\n%s", a.impl.name, got, want)
		}
	}
	return outs[upstream.name]
}
