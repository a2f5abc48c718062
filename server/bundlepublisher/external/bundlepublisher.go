package external

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	plugintypes "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/server/bundlepublisher"
)

// Publisher is a bundlepublisher.Publisher backed by an external plugin.
type Publisher struct {
	client bundlepublisherv1.BundlePublisherClient
	f      facade
}

var _ bundlepublisher.Publisher = (*Publisher)(nil)

// New adapts the BundlePublisher plugin reachable over conn; name is the
// plugin's name in the configuration.
func New(conn grpc.ClientConnInterface, name string) *Publisher {
	return &Publisher{client: bundlepublisherv1.NewBundlePublisherClient(conn), f: newFacade("bundlepublisher", name)}
}

// Name returns the plugin's name.
func (p *Publisher) Name() string { return p.f.name }

// PublishBundle sends b to the plugin.
func (p *Publisher) PublishBundle(ctx context.Context, b *types.Bundle) error {
	pb, err := ToPluginBundle(b)
	if err != nil {
		return p.f.errorf(codes.InvalidArgument, "bundle is invalid: %v", err)
	}
	_, err = p.client.PublishBundle(ctx, &bundlepublisherv1.PublishBundleRequest{Bundle: pb})
	return p.f.wrapErr(err)
}

// ToPluginBundle converts a stored bundle to the plugin SDK's form, with
// the checks SPIRE applies on the way (a valid trust domain name, parsable
// certificates, JWT keys with an ID and a parsable public key), so a plugin
// never receives what it could not parse either. A nil bundle stays nil.
func ToPluginBundle(b *types.Bundle) (*plugintypes.Bundle, error) {
	if b == nil {
		return nil, nil
	}
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("malformed trust domain: %w", err)
	}
	out := &plugintypes.Bundle{
		TrustDomain:    td.Name(),
		RefreshHint:    b.GetRefreshHint(),
		SequenceNumber: b.GetSequenceNumber(),
	}
	for _, a := range b.GetX509Authorities() {
		if len(a.GetAsn1()) == 0 {
			return nil, errors.New("invalid X.509 authority: missing X.509 certificate data")
		}
		if _, err := x509.ParseCertificate(a.GetAsn1()); err != nil {
			return nil, fmt.Errorf("invalid X.509 authority: failed to parse X.509 certificate data: %w", err)
		}
		out.X509Authorities = append(out.X509Authorities, &plugintypes.X509Certificate{Asn1: a.GetAsn1(), Tainted: a.GetTainted()})
	}
	for _, k := range b.GetJwtAuthorities() {
		switch {
		case k.GetKeyId() == "":
			return nil, errors.New("invalid JWT authority: missing key ID for JWT key")
		case len(k.GetPublicKey()) == 0:
			return nil, fmt.Errorf("invalid JWT authority: missing public key for JWT key %q", k.GetKeyId())
		}
		if _, err := x509.ParsePKIXPublicKey(k.GetPublicKey()); err != nil {
			return nil, fmt.Errorf("invalid JWT authority: failed to unmarshal public key for JWT key %q: %w", k.GetKeyId(), err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &plugintypes.JWTKey{
			KeyId: k.GetKeyId(), PublicKey: k.GetPublicKey(), ExpiresAt: k.GetExpiresAt(), Tainted: k.GetTainted(),
		})
	}
	return out, nil
}
