package external_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/external"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// plugin is a proof-of-possession NodeAttestor: the payload is an agent's
// PKIX public key, the challenge a random nonce, the response an ECDSA
// signature over it. The agent ID is derived from the key's fingerprint
// unless the test overrides it.
type plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer

	agentID  func(fingerprint string) string // nil: /spire/agent/test/<fp>
	abortErr error                           // returned right after the challenge is sent
	closeEOF bool                            // end the stream without an answer

	mu            sync.Mutex
	forwardedHost []string
}

func (p *plugin) Attest(stream nodeattestorv1.NodeAttestor_AttestServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	p.mu.Lock()
	p.forwardedHost = md.Get(external.ForwardedHostKey)
	p.mu.Unlock()

	req, err := stream.Recv()
	if err != nil {
		return err
	}
	pub, err := x509.ParsePKIXPublicKey(req.GetPayload())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "payload is not a public key: %v", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return status.Error(codes.InvalidArgument, "payload is not an ECDSA key")
	}
	if p.closeEOF {
		return nil
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if err := stream.Send(&nodeattestorv1.AttestResponse{Response: &nodeattestorv1.AttestResponse_Challenge{Challenge: nonce}}); err != nil {
		return err
	}
	if p.abortErr != nil {
		return p.abortErr
	}
	req, err = stream.Recv()
	if err != nil {
		return err
	}
	digest := sha256.Sum256(nonce)
	if !ecdsa.VerifyASN1(ec, digest[:], req.GetChallengeResponse()) {
		return status.Error(codes.PermissionDenied, "challenge response does not verify")
	}
	sum := sha256.Sum256(req.GetPayload())
	fp := hex.EncodeToString(sum[:8])
	id := td.IDString() + "/spire/agent/test/" + fp
	if p.agentID != nil {
		id = p.agentID(fp)
	}
	return stream.Send(&nodeattestorv1.AttestResponse{Response: &nodeattestorv1.AttestResponse_AgentAttributes{AgentAttributes: &nodeattestorv1.AgentAttributes{
		SpiffeId:       id,
		SelectorValues: []string{"fingerprint:" + fp, "curve:p256"},
		CanReattest:    true,
	}}})
}

func connect(t *testing.T, p *plugin) nodeattestor.Attestor {
	t.Helper()
	conn := grpctest.Serve(t, func(srv *grpc.Server) { nodeattestorv1.RegisterNodeAttestorServer(srv, p) })
	return external.New(conn, "test", td)
}

// agent holds the key the agent proves possession of.
type agent struct{ key *ecdsa.PrivateKey }

func newAgent(t *testing.T) *agent {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &agent{key: k}
}

func (a *agent) payload(t *testing.T) []byte {
	der, err := x509.MarshalPKIXPublicKey(a.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// answer signs the challenge, counting rounds.
func (a *agent) answer(rounds *int) nodeattestor.ChallengeFunc {
	return func(_ context.Context, c []byte) ([]byte, error) {
		*rounds++
		d := sha256.Sum256(c)
		return ecdsa.SignASN1(rand.Reader, a.key, d[:])
	}
}

func TestChallengeRound(t *testing.T) {
	p := &plugin{}
	na := connect(t, p)
	if na.Type() != "test" {
		t.Fatalf("Type = %q, want the plugin name", na.Type())
	}
	ag := newAgent(t)
	rounds := 0
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(":authority", "spire-server.example.org:8081"))
	res, err := na.Attest(ctx, ag.payload(t), nil, ag.answer(&rounds))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if rounds != 1 {
		t.Fatalf("challenge rounds = %d, want 1", rounds)
	}
	if !res.AgentID.MemberOf(td) || !strings.HasPrefix(res.AgentID.Path(), "/spire/agent/test/") || !res.CanReattest {
		t.Fatalf("result = %+v", res)
	}
	if len(res.Selectors) != 2 {
		t.Fatalf("selectors = %v, want 2", res.Selectors)
	}
	for _, s := range res.Selectors {
		if s.Type != "test" {
			t.Fatalf("selector %v: type is not the plugin name", s)
		}
	}
	if res.Selectors[1].Value != "curve:p256" {
		t.Fatalf("selector values out of order: %v", res.Selectors)
	}
	p.mu.Lock()
	host := p.forwardedHost
	p.mu.Unlock()
	if len(host) != 1 || host[0] != "spire-server.example.org" {
		t.Fatalf("plugin saw %s = %q, want the dialled host", external.ForwardedHostKey, host)
	}
}

func TestRefusals(t *testing.T) {
	other := newAgent(t)
	for _, tc := range []struct {
		name    string
		plugin  *plugin
		payload []byte // nil: the agent's key
		answer  func(*agent) nodeattestor.ChallengeFunc
		code    codes.Code
		message string
	}{
		{
			name:   "wrong challenge response",
			plugin: &plugin{},
			answer: func(*agent) nodeattestor.ChallengeFunc {
				// A different key's signature: possession not proven.
				n := 0
				return other.answer(&n)
			},
			code: codes.PermissionDenied, message: "nodeattestor(test): challenge response does not verify",
		},
		{
			name: "foreign trust domain", plugin: &plugin{agentID: func(fp string) string { return "spiffe://evil.example/spire/agent/test/" + fp }},
			code: codes.Internal, message: `is not a member of trust domain "example.org"`,
		},
		{
			name: "server ID", plugin: &plugin{agentID: func(string) string { return td.IDString() + "/spire/server" }},
			code: codes.Internal, message: "agent ID cannot collide with the server ID",
		},
		{
			name: "trust domain ID", plugin: &plugin{agentID: func(string) string { return td.IDString() }},
			code: codes.Internal, message: "has no path",
		},
		{
			name: "unparsable ID", plugin: &plugin{agentID: func(string) string { return "spiffe://example.org/a//b" }},
			code: codes.Internal, message: "invalid agent ID",
		},
		{
			name: "missing ID", plugin: &plugin{agentID: func(string) string { return "" }},
			code: codes.Internal, message: "plugin response missing agent ID",
		},
		{
			name: "plugin refuses payload", plugin: &plugin{}, payload: []byte("not a key"),
			code: codes.InvalidArgument, message: "nodeattestor(test): payload is not a public key",
		},
		{
			// The plugin ends the stream while our response is in flight:
			// its status, not Send's io.EOF, must reach the agent.
			name: "plugin aborts after challenge", plugin: &plugin{abortErr: status.Error(codes.Unauthenticated, "node is not registered")},
			code: codes.Unauthenticated, message: "nodeattestor(test): node is not registered",
		},
		{
			name: "plugin closes stream", plugin: &plugin{closeEOF: true},
			code: codes.Internal, message: "nodeattestor(test): plugin closed stream unexpectedly",
		},
		{
			name: "empty payload", plugin: &plugin{}, payload: []byte{},
			code: codes.InvalidArgument, message: "payload cannot be empty",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			na := connect(t, tc.plugin)
			ag := newAgent(t)
			payload := tc.payload
			if payload == nil {
				payload = ag.payload(t)
			}
			n := 0
			answer := ag.answer(&n)
			if tc.answer != nil {
				answer = tc.answer(ag)
			}
			res, err := na.Attest(context.Background(), payload, nil, answer)
			if err == nil {
				t.Fatalf("Attest succeeded: %+v", res)
			}
			st, ok := status.FromError(err)
			if !ok || st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
				t.Fatalf("Attest = %v, want %s containing %q", err, tc.code, tc.message)
			}
		})
	}
}

// TestIDOutsideAgentNamespace: SPIRE only warns when a plugin names an
// agent outside /spire/agent/<plugin>/, so existing plugins keep working.
func TestIDOutsideAgentNamespace(t *testing.T) {
	var logs syncbuf.Buffer
	na := connect(t, &plugin{agentID: func(fp string) string { return td.IDString() + "/host/" + fp }}).(*external.Attestor).
		WithLog(slog.New(slog.NewTextHandler(&logs, nil)))
	ag := newAgent(t)
	n := 0
	res, err := na.Attest(context.Background(), ag.payload(t), nil, ag.answer(&n))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if !strings.HasPrefix(res.AgentID.Path(), "/host/") {
		t.Fatalf("agent ID = %s", res.AgentID)
	}
	// The warning goes to the daemon's logger, naming the plugin.
	if out := logs.String(); !strings.Contains(out, "invalid agent ID") || !strings.Contains(out, "plugin_name=test") {
		t.Fatalf("warning not logged to the given logger with the plugin's name: %q", out)
	}
}

func TestChallengeErrorReturnedAsIs(t *testing.T) {
	na := connect(t, &plugin{})
	ag := newAgent(t)
	want := errors.New("agent went away")
	_, err := na.Attest(context.Background(), ag.payload(t), nil, func(context.Context, []byte) ([]byte, error) { return nil, want })
	if !errors.Is(err, want) {
		t.Fatalf("Attest = %v, want the challenge function's error", err)
	}
}
