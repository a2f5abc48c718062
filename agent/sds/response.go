package sds

import (
	"cmp"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// buildResponse answers q from upd, as SPIRE does: with no names, every
// validation context (by trust domain ID) and every TLS certificate (by
// SPIFFE ID); otherwise the names asked for, where the agent's trust domain
// may also be asked for as DefaultBundleName (or all trust domains as
// DefaultAllBundlesName; one of the three per request) and the first SVID
// as DefaultSVIDName. A name the caller may not see fails the whole request
// with InvalidArgument. versionInfo is empty for FetchSecrets; a streamed
// response carries it and a fresh nonce.
func buildResponse(s Settings, versionInfo string, q query, upd *cache.WorkloadUpdate) (*discoveryv3.DiscoveryResponse, error) {
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: q.typeURL, VersionInfo: versionInfo}
	if versionInfo != "" {
		nonce, err := newNonce()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "nonce: %v", err)
		}
		resp.Nonce = nonce
	}
	names := make(map[string]bool, len(q.names))
	for _, n := range q.names {
		if n != "" {
			names[n] = true
		}
	}
	all := len(names) == 0
	vc := newValidationContexts(upd, q.node.spiffeValidator(s))
	add := func(a *anypb.Any, err error, name string) error {
		if err != nil {
			return err
		}
		delete(names, name)
		resp.Resources = append(resp.Resources, a)
		return nil
	}

	if upd.Bundle != nil {
		own := upd.Bundle.TrustDomain()
		var err error
		switch id := own.IDString(); {
		case all || names[id]:
			a, e := vc.one(id, own)
			err = add(a, e, id)
		case names[s.DefaultBundleName]:
			a, e := vc.one(s.DefaultBundleName, own)
			err = add(a, e, s.DefaultBundleName)
		case names[s.DefaultAllBundlesName]:
			a, e := vc.all(s.DefaultAllBundlesName)
			err = add(a, e, s.DefaultAllBundlesName)
		}
		if err != nil {
			return nil, err
		}
	}
	// SPIRE walks a map here; sorted, the order is the same every time.
	for _, td := range sortedTrustDomains(upd.FederatedBundles) {
		if id := td.IDString(); all || names[id] {
			a, err := vc.one(id, td)
			if err := add(a, err, id); err != nil {
				return nil, err
			}
		}
	}
	for i, id := range upd.Identities {
		sid, err := cache.EntryID(id.Entry)
		if err != nil {
			continue // the cache serves no SVID for such an entry
		}
		switch name := sid.String(); {
		case all || names[name]:
			a, err := tlsCertificate(name, id)
			if err := add(a, err, name); err != nil {
				return nil, err
			}
		case i == 0 && names[s.DefaultSVIDName]:
			a, err := tlsCertificate(s.DefaultSVIDName, id)
			if err := add(a, err, s.DefaultSVIDName); err != nil {
				return nil, err
			}
		}
	}
	if len(names) > 0 {
		left := make([]string, 0, len(names))
		for n := range names {
			left = append(left, n)
		}
		slices.Sort(left)
		return nil, status.Errorf(codes.InvalidArgument, "workload is not authorized for the requested identities %q", left)
	}
	return resp, nil
}

func sortedTrustDomains[V any](m map[spiffeid.TrustDomain]V) []spiffeid.TrustDomain {
	tds := make([]spiffeid.TrustDomain, 0, len(m))
	for td := range m {
		tds = append(tds, td)
	}
	slices.SortFunc(tds, func(a, b spiffeid.TrustDomain) int { return cmp.Compare(a.Name(), b.Name()) })
	return tds
}

// tlsCertificate is the Secret holding id's chain and key, both PEM.
func tlsCertificate(name string, id cache.Identity) (*anypb.Any, error) {
	return marshalSecret(&tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(pemChain(id.SVID.Certificates())),
			PrivateKey:       inline(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: id.SVID.PrivateKey()})),
		}},
	})
}

func marshalSecret(s *tlsv3.Secret) (*anypb.Any, error) {
	a, err := anypb.New(s)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal secret %q: %v", s.Name, err)
	}
	return a, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func pemCertificates(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// pemChain is pemCertificates for a chain held as DER.
func pemChain(certs [][]byte) []byte {
	var out []byte
	for _, der := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// newNonce is SPIRE's: 4 random bytes in hex, enough to tell a response
// from the one before.
func newNonce() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("sds: %w", err)
	}
	return hex.EncodeToString(b), nil
}
