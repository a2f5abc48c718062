package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newClock() *testclock.Clock {
	// Real time, truncated: jwtsvid.ParseAndValidate checks exp and iat
	// against the wall clock.
	return testclock.New(time.Now().Truncate(time.Second))
}

type env struct {
	store *memStore
	km    keymanager.KeyManager
	clock *testclock.Clock
}

func newEnv() *env {
	return &env{store: newMemStore(), km: memory.New(), clock: newClock()}
}

func (e *env) config() ca.Config {
	return ca.Config{
		TrustDomain: td,
		KeyManager:  e.km,
		Store:       e.store,
		CATTL:       6 * time.Hour,
		X509SVIDTTL: 30 * time.Minute,
		JWTSVIDTTL:  5 * time.Minute,
		Clock:       e.clock.Now,
	}
}

func mustNew(t *testing.T, cfg ca.Config) *ca.Manager {
	t.Helper()
	m, err := ca.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return m
}

// leafKey is a workload key; its private half goes to x509svid.ParseRaw.
func leafKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, der
}

func concatDER(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(c.Raw)
	}
	return b.Bytes()
}

func TestX509SVIDEveryKeyType(t *testing.T) {
	for _, kt := range keymanager.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			e := newEnv()
			cfg := e.config()
			cfg.CAKeyType = kt
			m := mustNew(t, cfg)
			caCert := m.ActiveX509CA()
			if got, _ := keymanager.KeyTypeOf(caCert.PublicKey); got != kt {
				t.Fatalf("CA key type = %s, want %s", got, kt)
			}
			checkCACert(t, caCert)

			key, keyDER := leafKey(t)
			id := spiffeid.RequireFromPath(td, "/workload/web")
			certs, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{
				SPIFFEID:  id,
				PublicKey: key.Public(),
				DNSNames:  []string{"web.example.org", "www.example.org"},
			})
			if err != nil {
				t.Fatalf("SignX509SVID: %v", err)
			}
			if len(certs) != 1 {
				t.Fatalf("self-signed CA returned %d certificates, want the leaf only", len(certs))
			}
			svid, err := x509svid.ParseRaw(concatDER(certs), keyDER)
			if err != nil {
				t.Fatalf("x509svid.ParseRaw: %v", err)
			}
			if svid.ID != id {
				t.Fatalf("SVID ID = %s, want %s", svid.ID, id)
			}
			gotID, chains, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(e.clock.Now()))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if gotID != id || !chains[0][len(chains[0])-1].Equal(caCert) {
				t.Fatalf("verified as %s via %d certs; want %s via the CA", gotID, len(chains[0]), id)
			}

			leaf := certs[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
				t.Errorf("URI SANs = %v, want exactly %s", leaf.URIs, id)
			}
			if !leaf.BasicConstraintsValid || leaf.IsCA {
				t.Error("leaf must have valid basic constraints with CA=false")
			}
			wantKU := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement
			if leaf.KeyUsage != wantKU {
				t.Errorf("KeyUsage = %b, want %b", leaf.KeyUsage, wantKU)
			}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage = %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %s is not a positive 128-bit number", leaf.SerialNumber)
			}
			if !bytes.Equal(leaf.AuthorityKeyId, caCert.SubjectKeyId) || len(leaf.AuthorityKeyId) == 0 {
				t.Error("AuthorityKeyId does not name the CA's SubjectKeyId")
			}
			if leaf.Subject.CommonName != "web.example.org" || len(leaf.DNSNames) != 2 {
				t.Errorf("CN = %q, DNS = %v", leaf.Subject.CommonName, leaf.DNSNames)
			}
			if want := e.clock.Now().Add(30 * time.Minute); !leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %s, want default TTL to %s", leaf.NotAfter, want)
			}
		})
	}
}

func checkCACert(t *testing.T, c *x509.Certificate) {
	t.Helper()
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Error("CA certificate is not a CA")
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA KeyUsage = %b", c.KeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("CA URI SANs = %v", c.URIs)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("CA has no SubjectKeyId")
	}
	if c.Subject.String() != "O=SPIFFE,C=US" {
		t.Errorf("CA subject = %q", c.Subject)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
}

func TestX509SVIDCappedAtCAExpiry(t *testing.T) {
	e := newEnv()
	m := mustNew(t, e.config())
	key, _ := leafKey(t)
	certs, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{
		SPIFFEID:  spiffeid.RequireFromPath(td, "/long"),
		PublicKey: key.Public(),
		TTL:       100 * time.Hour,
		Subject:   m.ActiveX509CA().Subject, // any explicit subject is kept
	})
	if err != nil {
		t.Fatal(err)
	}
	if !certs[0].NotAfter.Equal(m.ActiveX509CA().NotAfter) {
		t.Fatalf("NotAfter %s not capped at the CA's %s", certs[0].NotAfter, m.ActiveX509CA().NotAfter)
	}
	if certs[0].Subject.String() != "O=SPIFFE,C=US" {
		t.Fatalf("explicit subject not used: %s", certs[0].Subject)
	}
}

func TestJWTSVIDEveryKeyType(t *testing.T) {
	wantAlg := map[keymanager.KeyType]string{
		keymanager.ECP256: "ES256", keymanager.ECP384: "ES384",
		keymanager.RSA2048: "RS256", keymanager.RSA4096: "RS256",
	}
	for _, kt := range keymanager.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			e := newEnv()
			cfg := e.config()
			cfg.JWTKeyType = kt
			cfg.JWTIssuer = "https://oidc.example.org"
			m := mustNew(t, cfg)
			id := spiffeid.RequireFromPath(td, "/workload/db")
			token, err := m.SignJWTSVID(context.Background(), ca.JWTSVIDParams{
				SPIFFEID: id, Audience: []string{"db", "backup"},
			})
			if err != nil {
				t.Fatalf("SignJWTSVID: %v", err)
			}
			svid, err := jwtsvid.ParseAndValidate(token, e.store.jwtBundle(t, td), []string{"backup"})
			if err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
			}
			if svid.ID != id {
				t.Fatalf("sub = %s, want %s", svid.ID, id)
			}
			if want := e.clock.Now().Add(5 * time.Minute); !svid.Expiry.Equal(want) {
				t.Errorf("exp = %s, want %s", svid.Expiry, want)
			}
			if svid.Claims["iss"] != "https://oidc.example.org" {
				t.Errorf("iss = %v", svid.Claims["iss"])
			}
			if iat, _ := svid.Claims["iat"].(float64); int64(iat) != e.clock.Now().Unix() {
				t.Errorf("iat = %v", svid.Claims["iat"])
			}
			tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(wantAlg[kt])})
			if err != nil {
				t.Fatalf("alg is not %s: %v", wantAlg[kt], err)
			}
			h := tok.Headers[0]
			if h.KeyID != m.JWTKeyID() || h.KeyID == "" || h.ExtraHeaders[jose.HeaderType] != "JWT" {
				t.Errorf("header kid=%q typ=%v; want kid %q, typ JWT", h.KeyID, h.ExtraHeaders[jose.HeaderType], m.JWTKeyID())
			}
			if _, err := jwtsvid.ParseAndValidate(token, e.store.jwtBundle(t, td), []string{"other"}); err == nil {
				t.Error("token validated for an audience it was not issued to")
			}
		})
	}
}

func TestJWTSVIDCappedAtKeyExpiry(t *testing.T) {
	e := newEnv()
	m := mustNew(t, e.config())
	token, err := m.SignJWTSVID(context.Background(), ca.JWTSVIDParams{
		SPIFFEID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}, TTL: 100 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(token, e.store.jwtBundle(t, td), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.store.bundle(t, td)
	if len(b.JwtAuthorities) != 1 || svid.Expiry.Unix() != b.JwtAuthorities[0].ExpiresAt {
		t.Fatalf("exp %s not capped at the key's published expiry", svid.Expiry)
	}
}

func TestRefusals(t *testing.T) {
	e := newEnv()
	m := mustNew(t, e.config())
	key, _ := leafKey(t)
	foreign := spiffeid.RequireFromString("spiffe://evil.example/workload")
	good := spiffeid.RequireFromPath(td, "/w")
	x509Rows := []struct {
		name string
		p    ca.X509SVIDParams
	}{
		{"foreign trust domain", ca.X509SVIDParams{SPIFFEID: foreign, PublicKey: key.Public()}},
		{"lookalike trust domain", ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromString("spiffe://example.org.evil/w"), PublicKey: key.Public()}},
		{"no SPIFFE ID", ca.X509SVIDParams{PublicKey: key.Public()}},
		{"trust domain ID as leaf", ca.X509SVIDParams{SPIFFEID: td.ID(), PublicKey: key.Public()}},
		{"no public key", ca.X509SVIDParams{SPIFFEID: good}},
		{"negative TTL", ca.X509SVIDParams{SPIFFEID: good, PublicKey: key.Public(), TTL: -time.Second}},
		{"empty DNS name", ca.X509SVIDParams{SPIFFEID: good, PublicKey: key.Public(), DNSNames: []string{""}}},
	}
	for _, r := range x509Rows {
		t.Run("x509/"+r.name, func(t *testing.T) {
			certs, err := m.SignX509SVID(context.Background(), r.p)
			if !errors.Is(err, ca.ErrInvalidParams) || certs != nil {
				t.Fatalf("SignX509SVID = %v, %v; want ErrInvalidParams", certs, err)
			}
		})
	}
	jwtRows := []struct {
		name string
		p    ca.JWTSVIDParams
	}{
		{"foreign trust domain", ca.JWTSVIDParams{SPIFFEID: foreign, Audience: []string{"a"}}},
		{"no SPIFFE ID", ca.JWTSVIDParams{Audience: []string{"a"}}},
		{"no audience", ca.JWTSVIDParams{SPIFFEID: good}},
		{"empty audience", ca.JWTSVIDParams{SPIFFEID: good, Audience: []string{""}}},
		{"negative TTL", ca.JWTSVIDParams{SPIFFEID: good, Audience: []string{"a"}, TTL: -time.Second}},
	}
	for _, r := range jwtRows {
		t.Run("jwt/"+r.name, func(t *testing.T) {
			tok, err := m.SignJWTSVID(context.Background(), r.p)
			if !errors.Is(err, ca.ErrInvalidParams) || tok != "" {
				t.Fatalf("SignJWTSVID = %q, %v; want ErrInvalidParams", tok, err)
			}
		})
	}
}

// verifyJWTSignature checks a token's signature against the bundle without
// go-spiffe's wall-clock expiry check, for tokens issued at fake times.
func verifyJWTSignature(token string, b *jwtbundle.Bundle) error {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	pub, ok := b.FindJWTAuthority(tok.Headers[0].KeyID)
	if !ok {
		return errors.New("kid not in bundle")
	}
	var c jwt.Claims
	return tok.Claims(pub, &c)
}

type journalView struct {
	X509CAs []struct {
		Slot, Status string
	} `json:"x509_cas"`
	JWTKeys []struct {
		Slot, Status, Kid string
	} `json:"jwt_keys"`
}

func readJournal(t *testing.T, s *memStore) journalView {
	t.Helper()
	var v journalView
	if err := json.Unmarshal(s.journal(t), &v); err != nil {
		t.Fatalf("journal: %v", err)
	}
	return v
}

func (v journalView) x509Status() map[string]string {
	out := map[string]string{}
	for _, e := range v.X509CAs {
		out[e.Slot] = e.Status
	}
	return out
}

func (v journalView) jwtStatus() map[string]string {
	out := map[string]string{}
	for _, e := range v.JWTKeys {
		out[e.Slot] = e.Status
	}
	return out
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	m := mustNew(t, e.config()) // CA TTL 6h: prepare at 3h, activate at 5h
	t0 := e.clock.Now()
	caA, kidA := m.ActiveX509CA(), m.JWTKeyID()
	at := func(d time.Duration) {
		t.Helper()
		e.clock.Set(t0.Add(d))
		if err := m.Rotate(ctx); err != nil {
			t.Fatalf("Rotate at +%s: %v", d, err)
		}
	}
	sign := func() []*x509.Certificate {
		t.Helper()
		key, _ := leafKey(t)
		certs, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public(), TTL: 2 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return certs
	}
	signJWT := func() string {
		t.Helper()
		tok, err := m.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	verifyAt := func(certs []*x509.Certificate, d time.Duration) (*x509.Certificate, error) {
		_, chains, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(t0.Add(d)))
		if err != nil {
			return nil, err
		}
		return chains[0][len(chains[0])-1], nil
	}

	if b := e.store.bundle(t, td); len(b.X509Authorities) != 1 || len(b.JwtAuthorities) != 1 {
		t.Fatalf("initial bundle has %d X.509 and %d JWT authorities, want 1 and 1", len(b.X509Authorities), len(b.JwtAuthorities))
	}
	if st := readJournal(t, e.store).x509Status(); st["A"] != "active" || len(st) != 1 {
		t.Fatalf("initial journal = %v", st)
	}

	at(3*time.Hour - time.Second)
	if b := e.store.bundle(t, td); len(b.X509Authorities) != 1 {
		t.Fatal("successor prepared before half-life")
	}

	at(3 * time.Hour)
	b := e.store.bundle(t, td)
	if len(b.X509Authorities) != 2 || len(b.JwtAuthorities) != 2 {
		t.Fatalf("after half-life the bundle has %d X.509 and %d JWT authorities, want the prepared ones too", len(b.X509Authorities), len(b.JwtAuthorities))
	}
	if !m.ActiveX509CA().Equal(caA) || m.JWTKeyID() != kidA {
		t.Fatal("prepared authority activated at half-life")
	}
	j := readJournal(t, e.store)
	if st := j.x509Status(); st["A"] != "active" || st["B"] != "prepared" {
		t.Fatalf("journal after prepare = %v", st)
	}
	if st := j.jwtStatus(); st["A"] != "active" || st["B"] != "prepared" {
		t.Fatalf("JWT journal after prepare = %v", st)
	}
	if root, err := verifyAt(sign(), 3*time.Hour); err != nil || !root.Equal(caA) {
		t.Fatalf("SVID signed while B is prepared: root %v, %v; want A", root, err)
	}
	// The prepared CA's certificate is already trusted by relying parties.
	authorities := m.X509Authorities()
	if len(authorities) != 2 {
		t.Fatalf("X509Authorities = %d, want active and prepared", len(authorities))
	}

	at(4*time.Hour + 59*time.Minute)
	oldSVID := sign() // by A, capped at A's expiry (t0+6h)
	oldJWT := signJWT()
	if !oldSVID[0].NotAfter.Equal(caA.NotAfter) {
		t.Fatalf("SVID outlives its CA: %s > %s", oldSVID[0].NotAfter, caA.NotAfter)
	}

	at(5 * time.Hour)
	caB := m.ActiveX509CA()
	if caB.Equal(caA) || m.JWTKeyID() == kidA {
		t.Fatal("successor not activated at five sixths")
	}
	if st := readJournal(t, e.store).x509Status(); st["A"] != "old" || st["B"] != "active" {
		t.Fatalf("journal after activation = %v", st)
	}
	newSVID := sign()
	if root, err := verifyAt(newSVID, 5*time.Hour); err != nil || !root.Equal(caB) {
		t.Fatalf("new SVID: root %v, %v; want B", root, err)
	}
	if root, err := verifyAt(oldSVID, 5*time.Hour+30*time.Minute); err != nil || !root.Equal(caA) {
		t.Fatalf("SVID by the previous CA no longer verifies before its expiry: %v", err)
	}
	newJWT := signJWT()
	if err := verifyJWTSignature(newJWT, e.store.jwtBundle(t, td)); err != nil {
		t.Fatalf("JWT by new key: %v", err)
	}
	if err := verifyJWTSignature(oldJWT, e.store.jwtBundle(t, td)); err != nil {
		t.Fatalf("JWT by previous key no longer verifies: %v", err)
	}

	// A expires at +6h; B reaches half-life then too, so A's slot is reused.
	keyA, err := e.km.GetKey(ctx, "x509-CA-A")
	if err != nil {
		t.Fatal(err)
	}
	at(6*time.Hour + time.Second)
	b = e.store.bundle(t, td)
	for _, a := range b.X509Authorities {
		if bytes.Equal(a.Asn1, caA.Raw) {
			t.Fatal("expired CA A still in the bundle")
		}
	}
	for _, a := range b.JwtAuthorities {
		if a.KeyId == kidA {
			t.Fatal("expired JWT key A still in the bundle")
		}
	}
	if len(b.X509Authorities) != 2 {
		t.Fatalf("bundle has %d X.509 authorities, want B and the new A", len(b.X509Authorities))
	}
	if _, err := verifyAt(oldSVID, 5*time.Hour+30*time.Minute); err == nil {
		t.Fatal("SVID by the pruned CA still verifies")
	}
	if err := verifyJWTSignature(oldJWT, e.store.jwtBundle(t, td)); err == nil {
		t.Fatal("JWT by the pruned key still verifies")
	}
	keyA2, err := e.km.GetKey(ctx, "x509-CA-A")
	if err != nil {
		t.Fatal(err)
	}
	if keyA2.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(keyA.Public()) {
		t.Fatal("slot A reused without a new key")
	}
	if st := readJournal(t, e.store).x509Status(); st["A"] != "prepared" || st["B"] != "active" {
		t.Fatalf("journal after reuse = %v", st)
	}
}

func TestActivationWhenCurrentExpired(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	m := mustNew(t, e.config())
	t0 := e.clock.Now()
	caA := m.ActiveX509CA()
	// The server was down from before half-life until after expiry.
	e.clock.Set(t0.Add(7 * time.Hour))
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	c := m.ActiveX509CA()
	if c.Equal(caA) || !c.NotAfter.After(e.clock.Now()) {
		t.Fatal("expired CA not replaced")
	}
	key, _ := leafKey(t)
	certs, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(e.clock.Now())); err != nil {
		t.Fatal(err)
	}
}

func TestRestartReusesJournal(t *testing.T) {
	ctx := context.Background()
	keysPath := filepath.Join(t.TempDir(), "keys.json")
	km, err := disk.New(keysPath)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv()
	e.km = km
	m1 := mustNew(t, e.config())
	t0 := e.clock.Now()
	e.clock.Set(t0.Add(3 * time.Hour)) // prepare B, so both states are reloaded
	if err := m1.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	journal := e.store.journal(t)

	km2, err := disk.New(keysPath)
	if err != nil {
		t.Fatal(err)
	}
	e.km = km2
	m2 := mustNew(t, e.config())
	if !m2.ActiveX509CA().Equal(m1.ActiveX509CA()) || m2.JWTKeyID() != m1.JWTKeyID() {
		t.Fatal("restart did not reuse the active CA and JWT key")
	}
	if !bytes.Equal(e.store.journal(t), journal) {
		t.Fatal("restart rewrote an unchanged journal")
	}
	if len(m2.X509Authorities()) != 2 {
		t.Fatal("restart lost the prepared CA")
	}
	key, keyDER := leafKey(t)
	certs, err := m2.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.ParseRaw(concatDER(certs), keyDER); err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(certs, e.store.x509Bundle(t, td), x509svid.WithTime(e.clock.Now())); err != nil {
		t.Fatal(err)
	}
	// The reloaded manager carries on the rotation where it was.
	e.clock.Set(t0.Add(5 * time.Hour))
	if err := m2.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if m2.ActiveX509CA().Equal(m1.ActiveX509CA()) {
		t.Fatal("reloaded prepared CA not activated")
	}
	tok, err := m2.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyJWTSignature(tok, e.store.jwtBundle(t, td)); err != nil {
		t.Fatal(err)
	}
}

func TestRestartWithLostKeysStartsFresh(t *testing.T) {
	e := newEnv()
	m1 := mustNew(t, e.config())
	e.km = memory.New() // a memory key manager after a restart
	m2 := mustNew(t, e.config())
	if m2.ActiveX509CA().Equal(m1.ActiveX509CA()) || m2.JWTKeyID() == m1.JWTKeyID() {
		t.Fatal("CA reused although its key is gone")
	}
	if b := e.store.bundle(t, td); len(b.X509Authorities) != 2 {
		t.Fatalf("bundle has %d X.509 authorities; the old CA must stay until it expires", len(b.X509Authorities))
	}
}

// TestSwappedKeyDetected: a key swapped behind the journal under a slot
// other than the one the journal is found by is refused.
func TestSwappedKeyDetected(t *testing.T) {
	for _, id := range []string{"x509-CA-B", "JWT-Signer-A"} {
		t.Run(id, func(t *testing.T) {
			e := newEnv()
			m := mustNew(t, e.config())
			e.clock.Set(e.clock.Now().Add(3 * time.Hour)) // prepare B
			if err := m.Rotate(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := e.km.GenerateKey(context.Background(), id, keymanager.ECP256); err != nil {
				t.Fatal(err)
			}
			_, err := ca.New(context.Background(), e.config())
			if !errors.Is(err, ca.ErrKeyMismatch) {
				t.Fatalf("ca.New with a swapped %s = %v, want ErrKeyMismatch", id, err)
			}
		})
	}
}

// TestSwappedActiveKeyStartsAfresh: with the active CA's own key replaced,
// the journal is no longer this server's (it cannot be told from another
// server's), so the CA starts a new one and leaves the old one alone; the
// old authority stays in the bundle until it expires.
func TestSwappedActiveKeyStartsAfresh(t *testing.T) {
	e := newEnv()
	m1 := mustNew(t, e.config())
	old := e.store.journal(t)
	if _, err := e.km.GenerateKey(context.Background(), "x509-CA-A", keymanager.ECP256); err != nil {
		t.Fatal(err)
	}
	m2 := mustNew(t, e.config())
	if m2.ActiveX509CA().Equal(m1.ActiveX509CA()) {
		t.Fatal("CA reused although its key was replaced")
	}
	if len(e.store.journals) != 2 {
		t.Fatalf("%d journals, want the old one and a new one", len(e.store.journals))
	}
	kept := false
	for _, j := range e.store.journals {
		kept = kept || bytes.Equal(j.Data, old)
	}
	if !kept {
		t.Fatal("the old journal was rewritten")
	}
	if b := e.store.bundle(t, td); len(b.X509Authorities) != 2 {
		t.Fatalf("bundle has %d X.509 authorities, want both", len(b.X509Authorities))
	}
}

func TestJournalWriteFailureCommitsNothing(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	m := mustNew(t, e.config())
	t0 := e.clock.Now()
	caA := m.ActiveX509CA()
	e.store.failJournal = true
	e.clock.Set(t0.Add(5 * time.Hour))
	if err := m.Rotate(ctx); err == nil {
		t.Fatal("Rotate succeeded although the journal could not be written")
	}
	if !m.ActiveX509CA().Equal(caA) || len(m.X509Authorities()) != 1 {
		t.Fatal("a rotation was committed without its journal")
	}
	e.store.failJournal = false
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	// Prepared and published on this step; activation waits until relying
	// parties had time to fetch it, at the latest A's expiry.
	if len(m.X509Authorities()) != 2 {
		t.Fatal("retry did not prepare the successor")
	}
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.ActiveX509CA().Equal(caA) {
		t.Fatal("successor activated right after being published")
	}
	e.clock.Set(caA.NotAfter)
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if m.ActiveX509CA().Equal(caA) {
		t.Fatal("successor not activated when the active CA expired")
	}
}

func TestConcurrentSigningDuringRotation(t *testing.T) {
	ctx := context.Background()
	e := newEnv()
	m := mustNew(t, e.config())
	t0 := e.clock.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, _ := leafKey(t)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.SignX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()}); err != nil {
					errs <- err
					return
				}
				if _, err := m.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(td, "/w"), Audience: []string{"a"}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for h := range 20 {
		e.clock.Set(t0.Add(time.Duration(h) * time.Hour))
		if err := m.Rotate(ctx); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	e := newEnv()
	m := mustNew(t, e.config())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil on cancellation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	e := newEnv()
	rows := map[string]func(*ca.Config){
		"no trust domain": func(c *ca.Config) { c.TrustDomain = spiffeid.TrustDomain{} },
		"no key manager":  func(c *ca.Config) { c.KeyManager = nil },
		"no store":        func(c *ca.Config) { c.Store = nil },
		"negative TTL":    func(c *ca.Config) { c.CATTL = -time.Hour },
		"bad key type":    func(c *ca.Config) { c.CAKeyType = keymanager.KeyType(42) },
	}
	for name, change := range rows {
		t.Run(name, func(t *testing.T) {
			cfg := e.config()
			change(&cfg)
			if _, err := ca.New(context.Background(), cfg); err == nil || !strings.HasPrefix(err.Error(), "ca: ") {
				t.Fatalf("ca.New = %v, want a ca: error", err)
			}
		})
	}
}
