package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

func seedCSR(f testing.TB, uris ...string) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		p, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		f.Fatal(err)
	}
	return der
}

// FuzzParseCSR: CSRs arrive from agents and admins; no input may panic, and
// anything accepted must carry a valid signature and at most one URI.
func FuzzParseCSR(f *testing.F) {
	f.Add(seedCSR(f))
	f.Add(seedCSR(f, "spiffe://example.org/w"))
	f.Add(seedCSR(f, "spiffe://example.org/a", "spiffe://example.org/b"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := parseCSR(der)
		if err != nil {
			return
		}
		if csr.CheckSignature() != nil || len(csr.URIs) > 1 {
			t.Fatalf("accepted a CSR that should be refused: %d URIs", len(csr.URIs))
		}
	})
}

// FuzzValidateEntry: entries arrive as protobuf from admins; validation
// must never panic and must only pass entries inside the trust domain with
// typed selectors.
func FuzzValidateEntry(f *testing.F) {
	a := &API{cfg: Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")}}
	for _, e := range []*types.Entry{
		{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/w"}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/p"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}, DnsNames: []string{"a.example.org"}, FederatesWith: []string{"other.org"}},
		{SpiffeId: &types.SPIFFEID{TrustDomain: "evil.org", Path: "/w"}},
		{Id: "bad id!"},
	} {
		b, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e types.Entry
		if proto.Unmarshal(b, &e) != nil {
			return
		}
		out, err := a.validateEntry(&e, nil)
		if err != nil {
			return
		}
		id, err := spiffeid.FromString(protoIDString(out.SpiffeId))
		if err != nil || id.TrustDomain() != a.cfg.TrustDomain {
			t.Fatalf("accepted SPIFFE ID %v", out.SpiffeId)
		}
		for _, s := range out.Selectors {
			if s.Type == "" || s.Value == "" {
				t.Fatalf("accepted selector %v", s)
			}
		}
	})
}
