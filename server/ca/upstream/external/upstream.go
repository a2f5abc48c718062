package external

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
	plugintypes "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
)

// Authority is an upstream.Authority and upstream.JWTKeyPublisher backed by
// an external plugin.
type Authority struct {
	client upstreamauthorityv1.UpstreamAuthorityClient
	f      facade.Facade
}

var (
	_ upstream.Authority       = (*Authority)(nil)
	_ upstream.JWTKeyPublisher = (*Authority)(nil)
)

// New adapts the UpstreamAuthority plugin reachable over conn; name is the
// plugin's name in the configuration, used in error messages.
func New(conn grpc.ClientConnInterface, name string) *Authority {
	return &Authority{client: upstreamauthorityv1.NewUpstreamAuthorityClient(conn), f: facade.Facade{Type: "upstreamauthority", Name: name}}
}

// MintX509CA has the plugin sign csrDER and returns the CA chain (the new
// CA first) and the upstream roots from its first response. The stream is
// then cancelled: the interface is one-shot, and root updates the plugin
// would stream later are picked up by the next mint instead.
func (a *Authority) MintX509CA(ctx context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	secs := ttl / time.Second
	if secs > math.MaxInt32 || secs < math.MinInt32 {
		return nil, nil, a.f.Errorf(codes.InvalidArgument, "preferred TTL %s out of range", ttl)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.client.MintX509CAAndSubscribe(ctx, &upstreamauthorityv1.MintX509CARequest{
		Csr:          csrDER,
		PreferredTtl: int32(secs),
	})
	if err != nil {
		return nil, nil, a.f.WrapErr(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, nil, a.streamError(err)
	}
	chain, err := certificates(resp.GetX509CaChain())
	if err != nil {
		return nil, nil, a.f.Errorf(codes.Internal, "plugin response has malformed X.509 CA chain: %v", err)
	}
	if len(chain) == 0 {
		return nil, nil, a.f.Errorf(codes.Internal, "plugin response missing X.509 CA chain")
	}
	roots, err := certificates(resp.GetUpstreamX509Roots())
	if err != nil {
		return nil, nil, a.f.Errorf(codes.Internal, "plugin response has malformed upstream X.509 roots: %v", err)
	}
	if len(roots) == 0 {
		return nil, nil, a.f.Errorf(codes.Internal, "plugin response missing upstream X.509 roots")
	}
	return chain, roots, nil
}

// PublishJWTKey publishes key upstream and returns the upstream's JWT keys
// from the plugin's first response; the stream is then cancelled, as in
// MintX509CA. A plugin that does not implement publishing (Unimplemented)
// yields an error that also wraps errors.ErrUnsupported.
func (a *Authority) PublishJWTKey(ctx context.Context, key *types.JWTKey) ([]*types.JWTKey, error) {
	pk, err := toPluginJWTKey(key)
	if err != nil {
		return nil, a.f.Errorf(codes.InvalidArgument, "invalid JWT key: %v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.client.PublishJWTKeyAndSubscribe(ctx, &upstreamauthorityv1.PublishJWTKeyRequest{JwtKey: pk})
	if err != nil {
		return nil, a.publishError(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, a.publishError(a.streamError(err))
	}
	keys := make([]*types.JWTKey, 0, len(resp.GetUpstreamJwtKeys()))
	for _, k := range resp.GetUpstreamJwtKeys() {
		ak, err := fromPluginJWTKey(k)
		if err != nil {
			return nil, a.f.Errorf(codes.Internal, "invalid plugin response: %v", err)
		}
		keys = append(keys, ak)
	}
	return keys, nil
}

func (a *Authority) publishError(err error) error {
	err = a.f.WrapErr(err)
	if status.Code(err) == codes.Unimplemented {
		return &unsupportedError{err: err}
	}
	return err
}

// streamError names an early end of stream; io.EOF alone would read as
// success to some callers.
func (a *Authority) streamError(err error) error {
	if errors.Is(err, io.EOF) {
		return a.f.Errorf(codes.Internal, "plugin closed stream unexpectedly")
	}
	return a.f.WrapErr(err)
}

// certificates parses the plugin's certificates; the tainted flag has no
// place in upstream.Authority's answer and is dropped.
func certificates(pbs []*plugintypes.X509Certificate) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(pbs))
	for _, pb := range pbs {
		if len(pb.GetAsn1()) == 0 {
			return nil, errors.New("missing X.509 certificate data")
		}
		c, err := x509.ParseCertificate(pb.GetAsn1())
		if err != nil {
			return nil, fmt.Errorf("failed to parse X.509 certificate data: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// checkJWTKey applies SPIRE's rules for a JWT key crossing the plugin
// boundary: a key ID and a parsable PKIX public key.
func checkJWTKey(id string, pkix []byte) error {
	if id == "" {
		return errors.New("missing key ID for JWT key")
	}
	if len(pkix) == 0 {
		return fmt.Errorf("missing public key for JWT key %q", id)
	}
	if _, err := x509.ParsePKIXPublicKey(pkix); err != nil {
		return fmt.Errorf("failed to unmarshal public key for JWT key %q: %w", id, err)
	}
	return nil
}

func toPluginJWTKey(k *types.JWTKey) (*plugintypes.JWTKey, error) {
	if k == nil {
		return nil, errors.New("missing JWT key")
	}
	if err := checkJWTKey(k.GetKeyId(), k.GetPublicKey()); err != nil {
		return nil, err
	}
	return &plugintypes.JWTKey{KeyId: k.GetKeyId(), PublicKey: k.GetPublicKey(), ExpiresAt: k.GetExpiresAt(), Tainted: k.GetTainted()}, nil
}

func fromPluginJWTKey(k *plugintypes.JWTKey) (*types.JWTKey, error) {
	if k == nil {
		return nil, errors.New("missing JWT key")
	}
	if err := checkJWTKey(k.GetKeyId(), k.GetPublicKey()); err != nil {
		return nil, err
	}
	return &types.JWTKey{KeyId: k.GetKeyId(), PublicKey: k.GetPublicKey(), ExpiresAt: k.GetExpiresAt(), Tainted: k.GetTainted()}, nil
}

// unsupportedError is the plugin's Unimplemented status that also matches
// errors.ErrUnsupported, which is how upstream.JWTKeyPublisher says "no
// JWT key publishing here" without the CA knowing about gRPC.
type unsupportedError struct{ err error }

// Error returns the plugin's message.
func (e *unsupportedError) Error() string { return e.err.Error() }

// Unwrap lets errors.Is find both the status and errors.ErrUnsupported.
func (e *unsupportedError) Unwrap() []error { return []error{e.err, errors.ErrUnsupported} }

// GRPCStatus keeps the plugin's status for gRPC callers.
func (e *unsupportedError) GRPCStatus() *status.Status {
	st, _ := status.FromError(e.err)
	return st
}
