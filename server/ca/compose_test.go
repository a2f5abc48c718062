package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// composer is a credentialcomposer.Composer in the test process. Each hook
// edits what it is given; an unset hook leaves it as it is. Every call is
// recorded as "<method> <id>".
type composer struct {
	name string
	ca   func(*credentialcomposer.X509CAAttributes)
	svid func(*credentialcomposer.X509SVIDAttributes)
	jwt  func(map[string]any)
	// caErr is returned by ComposeServerX509CA, err by the other methods,
	// so a Manager can start before its SVIDs are refused.
	caErr error
	err   error

	mu    sync.Mutex
	calls []string
	pubs  []crypto.PublicKey
}

func (c *composer) Name() string { return c.name }

func (c *composer) record(call string, pub crypto.PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
	c.pubs = append(c.pubs, pub)
}

func (c *composer) recorded() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

func (c *composer) ComposeServerX509CA(_ context.Context, a credentialcomposer.X509CAAttributes) (credentialcomposer.X509CAAttributes, error) {
	c.record("ca", nil)
	if c.caErr != nil {
		return credentialcomposer.X509CAAttributes{}, c.caErr
	}
	if c.ca != nil {
		c.ca(&a)
	}
	return a, nil
}

func (c *composer) composeSVID(call string, pub crypto.PublicKey, a credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	c.record(call, pub)
	if c.err != nil {
		return credentialcomposer.X509SVIDAttributes{}, c.err
	}
	if c.svid != nil {
		c.svid(&a)
	}
	return a, nil
}

func (c *composer) ComposeServerX509SVID(_ context.Context, a credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	return c.composeSVID("server", nil, a)
}

func (c *composer) ComposeAgentX509SVID(_ context.Context, id spiffeid.ID, pub crypto.PublicKey, a credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	return c.composeSVID("agent "+id.String(), pub, a)
}

func (c *composer) ComposeWorkloadX509SVID(_ context.Context, id spiffeid.ID, pub crypto.PublicKey, a credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	return c.composeSVID("workload "+id.String(), pub, a)
}

func (c *composer) ComposeWorkloadJWTSVID(_ context.Context, id spiffeid.ID, claims map[string]any) (map[string]any, error) {
	c.record("jwt "+id.String(), nil)
	if c.err != nil {
		return nil, c.err
	}
	if c.jwt != nil {
		c.jwt(claims)
	}
	return claims, nil
}

var (
	oidComposed  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}
	oidSAN       = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage  = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasic     = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKU     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidServer    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClient    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	oidCodeSign  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}
	composedExt  = pkix.Extension{Id: oidComposed, Value: []byte{0x0c, 2, 'h', 'i'}}
	composedName = "composed.test"
)

func mustDER(t *testing.T, v any) []byte {
	t.Helper()
	der, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// sanExt is a subjectAltName with the given URIs and DNS names.
func sanExt(t *testing.T, uris, dns []string) pkix.Extension {
	var names []asn1.RawValue
	for _, d := range dns {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(d)})
	}
	for _, u := range uris {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
	}
	return pkix.Extension{Id: oidSAN, Value: mustDER(t, names)}
}

// keyUsageExt is a keyUsage extension with bits (bit 0 the most
// significant) set.
func keyUsageExt(t *testing.T, bits ...int) pkix.Extension {
	var b byte
	n := 0
	for _, i := range bits {
		b |= 0x80 >> i
		n = max(n, i+1)
	}
	return pkix.Extension{Id: oidKeyUsage, Critical: true, Value: mustDER(t, asn1.BitString{Bytes: []byte{b}, BitLength: n})}
}

func basicConstraintsExt(t *testing.T, isCA bool) pkix.Extension {
	type bc struct {
		IsCA bool `asn1:"optional"`
	}
	return pkix.Extension{Id: oidBasic, Critical: true, Value: mustDER(t, bc{isCA})}
}

func extKeyUsageExt(t *testing.T, oids ...asn1.ObjectIdentifier) pkix.Extension {
	return pkix.Extension{Id: oidExtKU, Value: mustDER(t, oids)}
}

// withComposers is a Manager whose config carries cs.
func withComposers(t *testing.T, e *env, cs ...credentialcomposer.Composer) *ca.Manager {
	t.Helper()
	cfg := e.config()
	cfg.Composers = cs
	return mustNew(t, cfg)
}

func hasExtension(c *x509.Certificate, want pkix.Extension) bool {
	for _, ext := range c.Extensions {
		if ext.Id.Equal(want.Id) && ext.Critical == want.Critical && bytes.Equal(ext.Value, want.Value) {
			return true
		}
	}
	return false
}

// TestComposedWorkloadX509SVID: what the composer adds is in the
// certificate, the certificate is still a valid X.509-SVID for the ID, and
// the composer saw the workload's ID and key.
func TestComposedWorkloadX509SVID(t *testing.T) {
	for _, kt := range []keymanager.KeyType{keymanager.ECP256, keymanager.ECP384, keymanager.RSA2048} {
		t.Run(kt.String(), func(t *testing.T) {
			e := newEnv()
			cc := &composer{name: "c", svid: func(a *credentialcomposer.X509SVIDAttributes) {
				a.DNSNames = append(a.DNSNames, composedName)
				a.Subject.OrganizationalUnit = []string{"composed"}
				a.ExtraExtensions = append(a.ExtraExtensions, composedExt)
			}}
			cfg := e.config()
			cfg.CAKeyType = kt
			cfg.Composers = []credentialcomposer.Composer{cc}
			m := mustNew(t, cfg)
			key, keyDER := leafKey(t)
			id := spiffeid.RequireFromPath(td, "/workload/web")
			dns := []string{"web.example.org"}
			certs, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{SPIFFEID: id, PublicKey: key.Public(), DNSNames: dns})
			if err != nil {
				t.Fatalf("SignX509SVID: %v", err)
			}
			if dns[0] != "web.example.org" || len(dns) != 1 {
				t.Fatalf("caller's DNS names changed: %v", dns)
			}
			leaf := certs[0]
			if want := []string{"web.example.org", composedName}; !slices.Equal(leaf.DNSNames, want) {
				t.Errorf("DNS SANs = %v, want %v", leaf.DNSNames, want)
			}
			if got := leaf.Subject.String(); got != "CN=web.example.org,OU=composed,O=SPIRE,C=US" {
				t.Errorf("subject = %q", got)
			}
			if !hasExtension(leaf, composedExt) {
				t.Error("composed extension missing")
			}
			if _, err := x509svid.ParseRaw(concatDER(certs), keyDER); err != nil {
				t.Fatalf("x509svid.ParseRaw: %v", err)
			}
			gotID, _, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(e.clock.Now()))
			if err != nil || gotID != id {
				t.Fatalf("x509svid.Verify: %s, %v", gotID, err)
			}
			if want := e.clock.Now().Add(30 * time.Minute); !leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %s, want %s", leaf.NotAfter, want)
			}
			if got := cc.recorded(); !slices.Equal(got, []string{"ca", "workload " + id.String()}) {
				t.Errorf("calls = %v", got)
			}
			if !key.PublicKey.Equal(cc.pubs[1]) {
				t.Error("composer was not given the workload's public key")
			}
		})
	}
}

// TestIdentityCompositionMatchesDirectEncoding: a composer that changes
// nothing gets the certificate the direct encoder writes, extension for
// extension.
func TestIdentityCompositionMatchesDirectEncoding(t *testing.T) {
	e := newEnv()
	plain := mustNew(t, e.config())
	composed := withComposers(t, e, &composer{name: "noop"})
	key, _ := leafKey(t)
	for _, p := range []ca.X509SVIDParams{
		{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()},
		{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public(), DNSNames: []string{"a.test", "b.test"}},
		{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public(), Subject: pkix.Name{CommonName: "x", Organization: []string{"o"}}},
	} {
		a, err := plain.SignX509SVID(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := composed.SignX509SVID(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a[0].RawSubject, b[0].RawSubject) || !bytes.Equal(a[0].RawSubjectPublicKeyInfo, b[0].RawSubjectPublicKeyInfo) {
			t.Errorf("subject or key differ: %s vs %s", a[0].Subject, b[0].Subject)
		}
		if len(a[0].Extensions) != len(b[0].Extensions) {
			t.Fatalf("%d extensions directly, %d composed", len(a[0].Extensions), len(b[0].Extensions))
		}
		for i, x := range a[0].Extensions {
			y := b[0].Extensions[i]
			// The authority key ID names each manager's own CA.
			if x.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 35}) {
				continue
			}
			if !x.Id.Equal(y.Id) || x.Critical != y.Critical || !bytes.Equal(x.Value, y.Value) {
				t.Errorf("extension %d: %v vs %v", i, x, y)
			}
		}
		if !a[0].NotAfter.Equal(b[0].NotAfter) || !a[0].NotBefore.Equal(b[0].NotBefore) {
			t.Error("validity differs")
		}
	}
}

// TestComposersChainInOrder: each composer gets the previous one's output.
func TestComposersChainInOrder(t *testing.T) {
	e := newEnv()
	var seen []string
	first := &composer{name: "first", svid: func(a *credentialcomposer.X509SVIDAttributes) {
		a.DNSNames = append(a.DNSNames, "first.test")
	}, jwt: func(c map[string]any) { c["order"] = []any{"first"} }}
	second := &composer{name: "second", svid: func(a *credentialcomposer.X509SVIDAttributes) {
		seen = slices.Clone(a.DNSNames)
		a.DNSNames = append(a.DNSNames, "second.test")
	}, jwt: func(c map[string]any) { c["order"] = append(c["order"].([]any), "second") }}
	m := withComposers(t, e, first, second)
	key, _ := leafKey(t)
	certs, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"first.test"}) || !slices.Equal(certs[0].DNSNames, []string{"first.test", "second.test"}) {
		t.Errorf("second saw %v; certificate has %v", seen, certs[0].DNSNames)
	}
	token, err := m.SignJWTSVID(context.Background(), ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(token, e.store.jwtBundle(t, td), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(svid.Claims["order"]); string(got) != `["first","second"]` {
		t.Errorf("order = %s", got)
	}
}

// TestComposerMethodByKind: the server's, an agent's and a workload's
// SVIDs go to their own methods; an explicit kind wins over the ID.
func TestComposerMethodByKind(t *testing.T) {
	e := newEnv()
	cc := &composer{name: "c"}
	m := withComposers(t, e, cc)
	key, _ := leafKey(t)
	server := spiffeid.RequireFromPath(td, "/spire/server")
	agent := spiffeid.RequireFromPath(td, "/spire/agent/join_token/abc")
	workload := spiffeid.RequireFromPath(td, "/spire/agentless") // not under /spire/agent/
	for _, p := range []ca.X509SVIDParams{
		{SPIFFEID: server},
		{SPIFFEID: agent},
		{SPIFFEID: workload},
		{SPIFFEID: agent, Kind: ca.KindWorkload},
		{SPIFFEID: workload, Kind: ca.KindAgent},
		{SPIFFEID: workload, Kind: ca.KindServer},
	} {
		p.PublicKey = key.Public()
		if _, err := m.IssueX509SVID(context.Background(), p); err != nil {
			t.Fatalf("%s (%s): %v", p.SPIFFEID, p.Kind, err)
		}
	}
	want := []string{"ca", "server", "agent " + agent.String(), "workload " + workload.String(),
		"workload " + agent.String(), "agent " + workload.String(), "server"}
	if got := cc.recorded(); !slices.Equal(got, want) {
		t.Errorf("calls:\n got %v\nwant %v", got, want)
	}
	_, err := m.IssueX509SVID(context.Background(), ca.X509SVIDParams{SPIFFEID: workload, PublicKey: key.Public(), Kind: 42})
	if !errors.Is(err, ca.ErrInvalidParams) {
		t.Errorf("unknown kind: %v, want ErrInvalidParams", err)
	}
}

// TestComposedX509SVIDRefusals: a composition that changes whom the SVID
// names or what it may be used for is refused with SPIRE's message.
func TestComposedX509SVIDRefusals(t *testing.T) {
	const w = "spiffe://example.org/w"
	errComposer := errors.New("composer says no")
	for _, tc := range []struct {
		name  string
		id    string
		edit  func(*credentialcomposer.X509SVIDAttributes)
		err   error
		isErr error
		want  string
	}{
		{
			name: "other SPIFFE ID", edit: addExt(sanExt(t, []string{"spiffe://example.org/other"}, nil)),
			want: `invalid workload X509-SVID: invalid X509-SVID: expected URI SAN "spiffe://example.org/w" but got "spiffe://example.org/other"`,
		},
		{
			name: "second SPIFFE ID", edit: addExt(sanExt(t, []string{w, "spiffe://example.org/other"}, nil)),
			want: `invalid workload X509-SVID: invalid X509-SVID: expected URI SAN "spiffe://example.org/w" but got ["spiffe://example.org/w" "spiffe://example.org/other"]`,
		},
		{
			name: "SPIFFE ID dropped", edit: addExt(sanExt(t, nil, []string{"a.test"})),
			want: `invalid workload X509-SVID: invalid X509-SVID: missing URI SAN`,
		},
		{
			name: "agent ID changed", id: "spiffe://example.org/spire/agent/x/1",
			edit: addExt(sanExt(t, []string{"spiffe://example.org/spire/agent/x/2"}, nil)),
			want: `invalid agent X509-SVID: invalid X509-SVID: expected URI SAN "spiffe://example.org/spire/agent/x/1" but got "spiffe://example.org/spire/agent/x/2"`,
		},
		{
			name: "server ID changed", id: "spiffe://example.org/spire/server",
			edit: addExt(sanExt(t, []string{w}, nil)),
			want: `invalid server X509-SVID: invalid X509-SVID: expected URI SAN "spiffe://example.org/spire/server" but got "spiffe://example.org/w"`,
		},
		{
			name: "keyCertSign added", edit: addExt(keyUsageExt(t, 0, 5)),
			want: "invalid workload X509-SVID: invalid X509-SVID: only digitalSignature, keyEncipherment, and keyAgreement key usage can be set",
		},
		{
			name: "digitalSignature dropped", edit: addExt(keyUsageExt(t, 2)),
			want: "invalid workload X509-SVID: invalid X509-SVID: digitalSignature key usage must be set",
		},
		{
			name: "made a CA", edit: addExt(basicConstraintsExt(t, true)),
			want: "invalid workload X509-SVID: invalid X509-SVID: cA constraint must not be set",
		},
		{
			name: "clientAuth dropped", edit: addExt(extKeyUsageExt(t, oidServer)),
			want: "invalid workload X509-SVID: invalid X509-SVID: missing clientAuth extended key usage",
		},
		{
			name: "serverAuth dropped", edit: addExt(extKeyUsageExt(t, oidClient)),
			want: "invalid workload X509-SVID: invalid X509-SVID: missing serverAuth extended key usage",
		},
		{
			name: "both auths replaced", edit: addExt(extKeyUsageExt(t, oidCodeSign)),
			want: "invalid workload X509-SVID: invalid X509-SVID: missing both serverAuth and clientAuth extended key usage",
		},
		{
			name: "composer error", err: errComposer, isErr: errComposer, want: "composer says no",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv()
			m := withComposers(t, e, &composer{name: "c", svid: tc.edit, err: tc.err})
			id := spiffeid.RequireFromString(w)
			if tc.id != "" {
				id = spiffeid.RequireFromString(tc.id)
			}
			key, _ := leafKey(t)
			_, err := m.IssueX509SVID(context.Background(), ca.X509SVIDParams{SPIFFEID: id, PublicKey: key.Public()})
			if err == nil {
				t.Fatal("composition accepted")
			}
			if !strings.HasSuffix(err.Error(), tc.want) {
				t.Errorf("error %q, want it to end with %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "ca: sign X.509-SVID: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if tc.isErr != nil && !errors.Is(err, tc.isErr) {
				t.Errorf("error %v does not wrap %v", err, tc.isErr)
			}
			if errors.Is(err, ca.ErrInvalidParams) {
				t.Error("a composer's fault is not the caller's invalid parameter")
			}
		})
	}
}

func addExt(ext pkix.Extension) func(*credentialcomposer.X509SVIDAttributes) {
	return func(a *credentialcomposer.X509SVIDAttributes) { a.ExtraExtensions = append(a.ExtraExtensions, ext) }
}

// TestComposedSelfSignedCA: the CA certificate carries the composed
// subject, policy and extension, and still signs SVIDs that verify.
func TestComposedSelfSignedCA(t *testing.T) {
	e := newEnv()
	policy, err := x509.ParseOID("1.3.6.1.4.1.99999.2")
	if err != nil {
		t.Fatal(err)
	}
	cc := &composer{name: "c", ca: func(a *credentialcomposer.X509CAAttributes) {
		if a.Subject.String() != "O=SPIFFE,C=US" {
			t.Errorf("composer got CA subject %q", a.Subject)
		}
		a.Subject.CommonName = "Composed CA"
		a.Policies = append(a.Policies, policy)
		a.ExtraExtensions = append(a.ExtraExtensions, composedExt)
	}}
	m := withComposers(t, e, cc)
	c := m.ActiveX509CA()
	if c.Subject.String() != "CN=Composed CA,O=SPIFFE,C=US" {
		t.Errorf("CA subject = %q", c.Subject)
	}
	if len(c.Policies) != 1 || !c.Policies[0].Equal(policy) {
		t.Errorf("CA policies = %v", c.Policies)
	}
	if !hasExtension(c, composedExt) {
		t.Error("composed extension missing from the CA")
	}
	key, _ := leafKey(t)
	certs, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(e.clock.Now())); err != nil {
		t.Fatal(err)
	}
}

func TestComposedCARefusals(t *testing.T) {
	errComposer := errors.New("composer says no")
	for _, tc := range []struct {
		name string
		ext  pkix.Extension
		err  error
		want string
	}{
		{name: "keyCertSign dropped", ext: keyUsageExt(t, 0), want: "invalid X509 CA: keyCertSign key usage must be set"},
		{name: "keyEncipherment added", ext: keyUsageExt(t, 2, 5), want: "invalid X509 CA: only keyCertSign, cRLSign, or digitalSignature key usage can be set"},
		{name: "not a CA", ext: basicConstraintsExt(t, false), want: "invalid X509 CA: cA constraint is not set"},
		{name: "other trust domain", ext: sanExt(t, []string{"spiffe://evil.example"}, nil),
			want: `invalid X509 CA: expected URI SAN "spiffe://example.org" but got "spiffe://evil.example"`},
		{name: "composer error", err: errComposer, want: "composer says no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv()
			cfg := e.config()
			cfg.Composers = []credentialcomposer.Composer{&composer{name: "c", caErr: tc.err, ca: func(a *credentialcomposer.X509CAAttributes) {
				a.ExtraExtensions = append(a.ExtraExtensions, tc.ext)
			}}}
			_, err := ca.New(context.Background(), cfg)
			if err == nil {
				t.Fatal("composition accepted")
			}
			if !strings.HasSuffix(err.Error(), tc.want) || !strings.Contains(err.Error(), "ca: self-sign CA: ") {
				t.Errorf("error %q, want ca: self-sign CA: ...%s", err, tc.want)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("error %v does not wrap %v", err, tc.err)
			}
		})
	}
}

// csrUpstream checks the CSR it is sent, then has the disk upstream sign
// it.
type csrUpstream struct {
	*upstream.Disk
	csr *x509.CertificateRequest
}

func (u *csrUpstream) MintX509CA(ctx context.Context, csr []byte, ttl time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	var err error
	if u.csr, err = x509.ParseCertificateRequest(csr); err != nil {
		return nil, nil, err
	}
	return u.Disk.MintX509CA(ctx, csr, ttl)
}

// TestComposedUpstreamCSR: the CSR for an upstream carries the composed
// subject and extensions.
func TestComposedUpstreamCSR(t *testing.T) {
	dir := t.TempDir()
	root, rootKey := testCA(t, "root", nil, nil, 48*time.Hour)
	keyDER, err := x509.MarshalPKCS8PrivateKey(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	writePEM(t, certPath, "CERTIFICATE", root.Raw)
	writePEM(t, keyPath, "PRIVATE KEY", keyDER)
	disk, err := upstream.NewDisk(certPath, keyPath, "")
	if err != nil {
		t.Fatal(err)
	}
	up := &csrUpstream{Disk: disk}
	e := newEnv()
	e.clock = testclock.New(time.Now())
	cfg := e.config()
	cfg.Upstream = up
	cfg.Composers = []credentialcomposer.Composer{&composer{name: "c", ca: func(a *credentialcomposer.X509CAAttributes) {
		a.Subject.CommonName = "Composed CA"
		a.ExtraExtensions = append(a.ExtraExtensions, composedExt)
	}}}
	mustNew(t, cfg)
	if up.csr == nil {
		t.Fatal("upstream got no CSR")
	}
	if up.csr.Subject.CommonName != "Composed CA" {
		t.Errorf("CSR subject = %q", up.csr.Subject)
	}
	found := false
	for _, ext := range up.csr.Extensions {
		found = found || (ext.Id.Equal(composedExt.Id) && bytes.Equal(ext.Value, composedExt.Value))
	}
	if !found {
		t.Error("composed extension missing from the CSR")
	}
}

// jwtPayload decodes the claims of a compact JWS as written.
func jwtPayload(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestComposedJWTSVID: the composed claim is in the token, the token
// verifies, and timestamps a Struct turned into floats are integers again.
func TestComposedJWTSVID(t *testing.T) {
	e := newEnv()
	cfg := e.config()
	cfg.JWTIssuer = "https://issuer.test"
	var got map[string]any
	cfg.Composers = []credentialcomposer.Composer{&composer{name: "c", jwt: func(c map[string]any) {
		got = maps.Clone(c)
		c["composed"] = true
		// As they come back through a protobuf Struct.
		c["exp"] = float64(c["exp"].(int64))
		c["iat"] = float64(c["iat"].(int64))
	}}}
	m := mustNew(t, cfg)
	id := spiffeid.RequireFromPath(td, "/w")
	token, err := m.SignJWTSVID(context.Background(), ca.JWTSVIDParams{SPIFFEID: id, Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	want := map[string]any{"sub": id.String(), "aud": []string{"a"}, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "iss": "https://issuer.test"}
	if g, _ := json.Marshal(got); !bytes.Equal(g, mustJSON(t, want)) {
		t.Errorf("composer got %s, want %s", g, mustJSON(t, want))
	}
	svid, err := jwtsvid.ParseAndValidate(token, e.store.jwtBundle(t, td), []string{"a"})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}
	if svid.ID != id || svid.Claims["composed"] != true {
		t.Errorf("sub %s, claims %v", svid.ID, svid.Claims)
	}
	wantPayload := `{"aud":["a"],"composed":true,"exp":` + itoa(now.Add(5*time.Minute).Unix()) + `,"iat":` + itoa(now.Unix()) + `,"iss":"https://issuer.test","sub":"spiffe://example.org/w"}`
	if p := jwtPayload(t, token); p != wantPayload {
		t.Errorf("payload\n got %s\nwant %s", p, wantPayload)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestComposedJWTSVIDRefusals: claims SPIRE controls cannot be changed or
// dropped.
func TestComposedJWTSVIDRefusals(t *testing.T) {
	errComposer := errors.New("composer says no")
	e0 := newEnv()
	past := e0.clock.Now().Add(-time.Minute)
	future := e0.clock.Now().Add(time.Minute)
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		err  error
		want string
	}{
		{name: "sub changed", edit: func(c map[string]any) { c["sub"] = "spiffe://example.org/other" },
			want: `invalid JWT-SVID "sub" claim: expected "spiffe://example.org/w" but got "spiffe://example.org/other"`},
		{name: "sub dropped", edit: func(c map[string]any) { delete(c, "sub") },
			want: `invalid JWT-SVID "sub" claim: expected "spiffe://example.org/w" but got ""`},
		{name: "sub not a string", edit: func(c map[string]any) { c["sub"] = 7 },
			want: "failed to extract JWT-SVID claims for validation: "},
		{name: "exp dropped", edit: func(c map[string]any) { delete(c, "exp") },
			want: `invalid JWT-SVID "exp" claim: required but missing`},
		{name: "exp in the past", edit: func(c map[string]any) { c["exp"] = float64(past.Unix()) },
			want: `invalid JWT-SVID "exp" claim: already expired as of ` + past.Format(time.RFC3339)},
		{name: "nbf in the future", edit: func(c map[string]any) { c["nbf"] = future.Unix() },
			want: `invalid JWT-SVID "nbf" claim: not yet valid until ` + future.Format(time.RFC3339)},
		{name: "aud dropped", edit: func(c map[string]any) { delete(c, "aud") },
			want: `invalid JWT-SVID "aud" claim: required but missing`},
		{name: "aud emptied", edit: func(c map[string]any) { c["aud"] = []any{} },
			want: `invalid JWT-SVID "aud" claim: required but missing`},
		{name: "empty audience added", edit: func(c map[string]any) { c["aud"] = []any{"a", ""} },
			want: `invalid JWT-SVID "aud" claim: contains empty value`},
		{name: "not JSON", edit: func(c map[string]any) { c["x"] = make(chan int) },
			want: "encode composed claims: json: unsupported type: chan int"},
		{name: "composer error", err: errComposer, want: "composer says no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv()
			e.clock = e0.clock
			m := withComposers(t, e, &composer{name: "c", jwt: tc.edit, err: tc.err})
			_, err := m.SignJWTSVID(context.Background(), ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}})
			if err == nil {
				t.Fatal("composition accepted")
			}
			if !strings.HasPrefix(err.Error(), "ca: sign JWT-SVID: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want ca: sign JWT-SVID: ...%s", err, tc.want)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("error %v does not wrap %v", err, tc.err)
			}
		})
	}
}
