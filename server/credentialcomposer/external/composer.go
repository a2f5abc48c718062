package external

import (
	"context"
	"crypto"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
)

// Composer is a credentialcomposer.Composer backed by an external plugin.
type Composer struct {
	client credentialcomposerv1.CredentialComposerClient
	f      facade.Facade
}

var _ credentialcomposer.Composer = (*Composer)(nil)

// New adapts the CredentialComposer plugin reachable over conn; name is the
// plugin's name in the configuration, used in error messages.
func New(conn grpc.ClientConnInterface, name string) *Composer {
	return &Composer{
		client: credentialcomposerv1.NewCredentialComposerClient(conn),
		f:      facade.Facade{Type: "CredentialComposer", Name: name},
	}
}

// Name returns the plugin's name in the configuration.
func (c *Composer) Name() string { return c.f.Name }

// ComposeServerX509CA implements credentialcomposer.Composer.
func (c *Composer) ComposeServerX509CA(ctx context.Context, attrs credentialcomposer.X509CAAttributes) (credentialcomposer.X509CAAttributes, error) {
	in, err := x509CAAttributesToV1(attrs)
	if err != nil {
		return credentialcomposer.X509CAAttributes{}, c.f.Errorf(codes.Internal, "invalid X509CA attributes: %v", err)
	}
	resp, err := c.client.ComposeServerX509CA(ctx, &credentialcomposerv1.ComposeServerX509CARequest{Attributes: in})
	if err != nil {
		return unchanged(c.f, attrs, err)
	}
	pb := resp.GetAttributes()
	if pb == nil {
		return attrs, nil
	}
	out, err := x509CAAttributesFromV1(pb)
	if err != nil {
		return credentialcomposer.X509CAAttributes{}, c.f.Errorf(codes.Internal, "plugin returned invalid X509CA attributes: %v", err)
	}
	return out, nil
}

// ComposeServerX509SVID implements credentialcomposer.Composer.
func (c *Composer) ComposeServerX509SVID(ctx context.Context, attrs credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	in, err := x509SVIDAttributesToV1(attrs)
	if err != nil {
		return credentialcomposer.X509SVIDAttributes{}, c.f.Errorf(codes.Internal, "invalid server X509SVID attributes: %v", err)
	}
	resp, err := c.client.ComposeServerX509SVID(ctx, &credentialcomposerv1.ComposeServerX509SVIDRequest{Attributes: in})
	return c.x509SVIDResult(attrs, resp, err)
}

// ComposeAgentX509SVID implements credentialcomposer.Composer.
func (c *Composer) ComposeAgentX509SVID(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, attrs credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	req, err := c.x509SVIDRequest("agent", id, pub, attrs)
	if err != nil {
		return credentialcomposer.X509SVIDAttributes{}, err
	}
	resp, err := c.client.ComposeAgentX509SVID(ctx, &credentialcomposerv1.ComposeAgentX509SVIDRequest{
		Attributes: req.attrs, SpiffeId: req.id, PublicKey: req.pub,
	})
	return c.x509SVIDResult(attrs, resp, err)
}

// ComposeWorkloadX509SVID implements credentialcomposer.Composer.
func (c *Composer) ComposeWorkloadX509SVID(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, attrs credentialcomposer.X509SVIDAttributes) (credentialcomposer.X509SVIDAttributes, error) {
	req, err := c.x509SVIDRequest("workload", id, pub, attrs)
	if err != nil {
		return credentialcomposer.X509SVIDAttributes{}, err
	}
	resp, err := c.client.ComposeWorkloadX509SVID(ctx, &credentialcomposerv1.ComposeWorkloadX509SVIDRequest{
		Attributes: req.attrs, SpiffeId: req.id, PublicKey: req.pub,
	})
	return c.x509SVIDResult(attrs, resp, err)
}

// ComposeWorkloadJWTSVID implements credentialcomposer.Composer. The claims
// travel as a protobuf Struct, so numbers come back as float64.
func (c *Composer) ComposeWorkloadJWTSVID(ctx context.Context, id spiffeid.ID, claims map[string]any) (map[string]any, error) {
	if id.IsZero() {
		return nil, c.f.Errorf(codes.Internal, "invalid workload ID: empty")
	}
	in, err := claimsToV1(claims)
	if err != nil {
		return nil, c.f.Errorf(codes.Internal, "invalid workload JWTSVID attributes: %v", err)
	}
	resp, err := c.client.ComposeWorkloadJWTSVID(ctx, &credentialcomposerv1.ComposeWorkloadJWTSVIDRequest{
		SpiffeId:   id.String(),
		Attributes: &credentialcomposerv1.JWTSVIDAttributes{Claims: in},
	})
	if err != nil {
		return unchanged(c.f, claims, err)
	}
	pb := resp.GetAttributes()
	if pb == nil {
		return claims, nil
	}
	return pb.GetClaims().AsMap(), nil
}

// x509SVIDRequestV1 is what the agent and workload requests share.
type x509SVIDRequestV1 struct {
	attrs *credentialcomposerv1.X509SVIDAttributes
	id    string
	pub   []byte
}

func (c *Composer) x509SVIDRequest(kind string, id spiffeid.ID, pub crypto.PublicKey, attrs credentialcomposer.X509SVIDAttributes) (x509SVIDRequestV1, error) {
	if id.IsZero() {
		return x509SVIDRequestV1{}, c.f.Errorf(codes.Internal, "invalid %s ID: empty", kind)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return x509SVIDRequestV1{}, c.f.Errorf(codes.Internal, "invalid %s X509SVID public key: %v", kind, err)
	}
	in, err := x509SVIDAttributesToV1(attrs)
	if err != nil {
		return x509SVIDRequestV1{}, c.f.Errorf(codes.Internal, "invalid %s X509SVID attributes: %v", kind, err)
	}
	return x509SVIDRequestV1{attrs: in, id: id.String(), pub: der}, nil
}

// x509SVIDResult turns a plugin's answer into attributes: Unimplemented or
// no attributes leave the input as it was.
func (c *Composer) x509SVIDResult(attrs credentialcomposer.X509SVIDAttributes, resp interface {
	GetAttributes() *credentialcomposerv1.X509SVIDAttributes
}, err error) (credentialcomposer.X509SVIDAttributes, error) {
	if err != nil {
		return unchanged(c.f, attrs, err)
	}
	pb := resp.GetAttributes()
	if pb == nil {
		return attrs, nil
	}
	out, err := x509SVIDAttributesFromV1(pb)
	if err != nil {
		return credentialcomposer.X509SVIDAttributes{}, c.f.Errorf(codes.Internal, "plugin returned invalid X509SVID attributes: %v", err)
	}
	return out, nil
}

// unchanged is the answer to a failed call: a plugin that does not
// implement the method leaves the input as it was, as in SPIRE; any other
// error is the plugin's, prefixed.
func unchanged[T any](f facade.Facade, in T, err error) (T, error) {
	if status.Code(err) == codes.Unimplemented {
		return in, nil
	}
	var zero T
	return zero, f.WrapErr(err)
}
