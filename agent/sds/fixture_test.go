package sds

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// secretTypeURL is the type URL Envoy asks with and every resource has.
const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

var (
	ownTD = spiffeid.RequireTrustDomainFromString("example.org")
	fedTD = spiffeid.RequireTrustDomainFromString("other.test")
)

// fixture is a real agent cache holding the bundles of two real CAs (ours
// and a federated one) and the entries and SVIDs a test adds.
type fixture struct {
	CA, Fed *wltest.CA
	Cache   *cache.Cache

	mu      sync.Mutex
	entries []*types.Entry
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{CA: wltest.NewCA(t, ownTD), Fed: wltest.NewCA(t, fedTD), Cache: cache.New(ownTD, nil, nil)}
	f.Cache.SetBundle(f.CA.Bundle())
	f.Cache.SetFederatedBundles(map[spiffeid.TrustDomain]*spiffebundle.Bundle{fedTD: f.Fed.Bundle()})
	return f
}

// Add registers an entry for path with selectors (created at createdAt,
// which orders a caller's SVIDs) and gives it an SVID.
func (f *fixture) Add(t testing.TB, path string, createdAt int64, selectors []*types.Selector, federatesWith ...string) cache.Identity {
	t.Helper()
	id := f.CA.Issue(t, path)
	id.Entry.Selectors, id.Entry.CreatedAt, id.Entry.FederatesWith = selectors, createdAt, federatesWith
	f.mu.Lock()
	f.entries = append(f.entries, id.Entry)
	f.Cache.SetEntries(append([]*types.Entry(nil), f.entries...))
	f.mu.Unlock()
	f.Cache.SetSVIDs(map[string]cache.Identity{id.Entry.Id: id})
	return id
}

// Rotate gives the entry of old a new SVID (new key, new serial).
func (f *fixture) Rotate(t testing.TB, old cache.Identity) cache.Identity {
	t.Helper()
	n := f.CA.Issue(t, old.Entry.SpiffeId.Path)
	n.Entry = old.Entry
	f.Cache.SetSVIDs(map[string]cache.Identity{old.Entry.Id: {SVID: n.SVID}})
	return n
}

// decodeSecrets unmarshals every resource of resp as a Secret.
func decodeSecrets(t testing.TB, resp *discoveryv3.DiscoveryResponse) []*tlsv3.Secret {
	t.Helper()
	var out []*tlsv3.Secret
	for _, r := range resp.GetResources() {
		if r.GetTypeUrl() != secretTypeURL {
			t.Fatalf("resource type %q, want %q", r.GetTypeUrl(), secretTypeURL)
		}
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// secretNames lists the names of secrets in order.
func secretNames(secrets []*tlsv3.Secret) []string {
	out := make([]string, len(secrets))
	for i, s := range secrets {
		out[i] = s.GetName()
	}
	return out
}

// checkTLSCertificate fails unless s is a TLS certificate Secret named
// name holding want's chain as PEM and a PKCS#8 PEM key that is want's.
func checkTLSCertificate(t testing.TB, s *tlsv3.Secret, name string, want cache.Identity) {
	t.Helper()
	if s.GetName() != name {
		t.Fatalf("secret %q, want %q", s.GetName(), name)
	}
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %q is not a TLS certificate: %v", name, s)
	}
	certs := parsePEMCertificates(t, tc.GetCertificateChain().GetInlineBytes())
	wantCerts := want.SVID.Certificates()
	if len(certs) != len(wantCerts) {
		t.Fatalf("%d certificates in the chain, want %d", len(certs), len(wantCerts))
	}
	for i := range certs {
		if !bytes.Equal(certs[i].Raw, wantCerts[i]) {
			t.Fatalf("certificate %d of the chain is not the SVID's", i)
		}
	}
	block, rest := pem.Decode(tc.GetPrivateKey().GetInlineBytes())
	if block == nil || block.Type != "PRIVATE KEY" || len(rest) != 0 {
		t.Fatalf("private key is not one PKCS#8 PEM block: %q", tc.GetPrivateKey().GetInlineBytes())
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.(crypto.Signer).Public().(*ecdsa.PublicKey)
	if !pub.Equal(certs[0].PublicKey) {
		t.Fatal("the private key does not match the leaf certificate")
	}
	// The key as Go marshals it, which is what SPIRE's agent sends.
	if der, err := x509.MarshalPKCS8PrivateKey(key); err != nil || !bytes.Equal(der, block.Bytes) {
		t.Fatalf("the private key is not the key's PKCS#8 form (%v)", err)
	}
}

func parsePEMCertificates(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for len(b) > 0 {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("not a PEM certificate: %q", b)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// trustedCA returns the plain trusted CAs of a validation context Secret
// named name, failing if it has a custom validator instead.
func trustedCA(t testing.TB, s *tlsv3.Secret, name string) []*x509.Certificate {
	t.Helper()
	if s.GetName() != name {
		t.Fatalf("secret %q, want %q", s.GetName(), name)
	}
	vc := s.GetValidationContext()
	if vc == nil || vc.GetCustomValidatorConfig() != nil || vc.GetTrustedCa() == nil {
		t.Fatalf("secret %q is not a trusted-CA validation context: %v", name, s)
	}
	return parsePEMCertificates(t, vc.GetTrustedCa().GetInlineBytes())
}

// spiffeValidator returns the trust domains (name to authorities, in
// order) of a SPIFFE validator validation context named name.
func spiffeValidator(t testing.TB, s *tlsv3.Secret, name string) ([]string, map[string][]*x509.Certificate) {
	t.Helper()
	if s.GetName() != name {
		t.Fatalf("secret %q, want %q", s.GetName(), name)
	}
	vc := s.GetValidationContext()
	cv := vc.GetCustomValidatorConfig()
	if cv == nil || vc.GetTrustedCa() != nil {
		t.Fatalf("secret %q has no SPIFFE validator: %v", name, s)
	}
	if cv.GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("validator %q", cv.GetName())
	}
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	var order []string
	tds := map[string][]*x509.Certificate{}
	for _, td := range cfg.GetTrustDomains() {
		order = append(order, td.GetName())
		tds[td.GetName()] = parsePEMCertificates(t, td.GetTrustBundle().GetInlineBytes())
	}
	return order, tds
}
