package external

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
)

// ForwardedHostKey is the metadata key under which the plugin receives the
// :authority the agent dialled, as in SPIRE. The agent chooses it, so a
// plugin may log it or pick configuration by it, never trust it.
const ForwardedHostKey = "X-Untrusted-Forwarded-Host"

// serverIDPath is the path of the server's own SPIFFE ID, which no agent
// may be given.
const serverIDPath = "/spire/server"

// Attestor is a nodeattestor.Attestor backed by an external plugin.
type Attestor struct {
	client nodeattestorv1.NodeAttestorClient
	name   string
	td     spiffeid.TrustDomain
	f      facade.Facade
	log    *slog.Logger
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New adapts the NodeAttestor plugin reachable over conn. name is the
// plugin's name in the configuration: the attestation data type it handles
// and the type of the selectors it produces. Agent IDs it returns must be in
// td.
func New(conn grpc.ClientConnInterface, name string, td spiffeid.TrustDomain) *Attestor {
	return &Attestor{
		client: nodeattestorv1.NewNodeAttestorClient(conn),
		name:   name,
		td:     td,
		f:      facade.Facade{Type: "nodeattestor", Name: name},
		log:    slog.Default().With("plugin_type", "NodeAttestor", "plugin_name", name),
	}
}

// WithLog returns the attestor logging its warnings (an agent ID outside
// SPIRE's agent path) to log instead of slog's default logger.
func (a *Attestor) WithLog(log *slog.Logger) *Attestor {
	c := *a
	c.log = log.With("plugin_type", "NodeAttestor", "plugin_name", a.name, "external", true)
	return &c
}

// Type returns the plugin name.
func (a *Attestor) Type() string { return a.name }

// Attest runs the plugin's Attest stream: the payload first, then one
// challenge response per challenge, until the plugin names the agent.
// Errors from challenge are returned as they are. The CSR is not passed
// on: the plugin SDK's NodeAttestor protocol has no field for it, so an
// external method cannot bind the agent's key, as in SPIRE.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, challenge nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	switch {
	case len(payload) == 0:
		return nil, status.Error(codes.InvalidArgument, "payload cannot be empty")
	case challenge == nil:
		return nil, status.Error(codes.InvalidArgument, "challenge function cannot be nil")
	}
	// Ending the stream early (a failed challenge) must end the plugin's
	// side too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	host, err := originalHost(ctx)
	if err != nil {
		a.log.Warn("Failed to extract ':authority' header from gRPC metadata", "error", err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, ForwardedHostKey, host)

	stream, err := a.client.Attest(ctx)
	if err != nil {
		return nil, a.f.WrapErr(err)
	}
	if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_Payload{Payload: payload}}); err != nil {
		return nil, a.sendError(stream, err)
	}
	var attrs *nodeattestorv1.AgentAttributes
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, a.streamError(err)
		}
		if attrs = resp.GetAgentAttributes(); attrs != nil {
			break
		}
		c := resp.GetChallenge()
		if c == nil {
			return nil, a.f.Errorf(codes.Internal, "plugin response missing challenge or agent attributes")
		}
		answer, err := challenge(ctx, c)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_ChallengeResponse{ChallengeResponse: answer}}); err != nil {
			return nil, a.sendError(stream, err)
		}
	}
	id, err := a.agentID(attrs.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	var sels []*types.Selector
	if v := attrs.GetSelectorValues(); v != nil {
		sels = make([]*types.Selector, 0, len(v))
		for _, s := range v {
			sels = append(sels, &types.Selector{Type: a.name, Value: s})
		}
	}
	return &nodeattestor.Result{AgentID: id, Selectors: sels, CanReattest: attrs.GetCanReattest()}, nil
}

// agentID applies the checks SPIRE's AttestAgent applies to the ID an
// attestor returns. SPIRE refuses an unparsable ID, the server's own ID,
// and (when signing) an ID outside the trust domain or without a path; an
// ID outside /spire/agent/<plugin>/ it only warns about, because existing
// plugins emit such IDs, so we do the same.
func (a *Attestor) agentID(s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, a.f.Errorf(codes.Internal, "plugin response missing agent ID")
	}
	id, err := spiffeid.FromString(s)
	switch {
	case err != nil:
		return spiffeid.ID{}, a.f.Errorf(codes.Internal, "invalid agent ID: %v", err)
	case !id.MemberOf(a.td):
		return spiffeid.ID{}, a.f.Errorf(codes.Internal, "agent ID %q is not a member of trust domain %q", id, a.td)
	case id.Path() == "":
		return spiffeid.ID{}, a.f.Errorf(codes.Internal, "agent ID %q has no path", id)
	case id.Path() == serverIDPath:
		return spiffeid.ID{}, a.f.Errorf(codes.Internal, "agent ID cannot collide with the server ID")
	}
	if !strings.HasPrefix(id.Path(), "/spire/agent/"+a.name+"/") {
		a.log.Warn("The node attestor produced an invalid agent ID; future releases will enforce that agent IDs are within the reserved agent namespace for the node attestor",
			"agent_id", id.String())
	}
	return id, nil
}

// sendError turns a failed Send into the plugin's status. A gRPC client
// stream's Send reports only io.EOF when the plugin has ended the stream;
// the plugin's own status (a refusal with its code) is what Recv returns.
func (a *Attestor) sendError(stream nodeattestorv1.NodeAttestor_AttestClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return a.streamError(rerr)
		}
	}
	return a.streamError(err)
}

func (a *Attestor) streamError(err error) error {
	if errors.Is(err, io.EOF) {
		return a.f.Errorf(codes.Internal, "plugin closed stream unexpectedly")
	}
	return a.f.WrapErr(err)
}

// originalHost returns the host part of the :authority the agent dialled.
func originalHost(ctx context.Context) (string, error) {
	authority := metadata.ValueFromIncomingContext(ctx, ":authority")
	if len(authority) == 0 {
		return "", errors.New("empty :authority header")
	}
	host, _, err := net.SplitHostPort(authority[0])
	if err != nil {
		return "", err
	}
	return host, nil
}
