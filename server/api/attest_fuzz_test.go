package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// attestStream is one AttestAgent stream, in memory: Recv hands out the
// agent's messages in order and then io.EOF, as when an agent closes its
// side; Send records what the server sent. Only Context, Recv and Send
// are called by the handler; the embedded ServerStream stays nil.
type attestStream struct {
	grpc.ServerStream
	ctx context.Context
	in  []*agentv1.AttestAgentRequest
	out []*agentv1.AttestAgentResponse
}

func (s *attestStream) Context() context.Context { return s.ctx }

func (s *attestStream) Send(r *agentv1.AttestAgentResponse) error {
	s.out = append(s.out, r)
	return nil
}

func (s *attestStream) Recv() (*agentv1.AttestAgentRequest, error) {
	if len(s.in) == 0 {
		return nil, io.EOF
	}
	r := s.in[0]
	s.in = s.in[1:]
	return r, nil
}

// roundsAttestor drives AttestAgent's challenge loop as far as an input
// asks: the payload's first byte is how many challenges it sends, the
// challenge of round i is the byte i, and the agent passes by echoing each.
// The real attestors send one challenge at most, so without it the round
// limit would go unfuzzed.
type roundsAttestor struct{ td spiffeid.TrustDomain }

func (roundsAttestor) Type() string { return "fuzz_rounds" }

func (a roundsAttestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, challenge nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	if len(payload) == 0 {
		return nil, status.Error(codes.InvalidArgument, "fuzz_rounds: missing payload")
	}
	for i := range int(payload[0]) {
		resp, err := challenge(ctx, []byte{byte(i)})
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(resp, []byte{byte(i)}) {
			return nil, fmt.Errorf("fuzz_rounds: round %d: wrong answer", i)
		}
	}
	return &nodeattestor.Result{AgentID: spiffeid.RequireFromSegments(a.td, "spire", "agent", "fuzz_rounds", fmt.Sprint(payload[0])), CanReattest: true}, nil
}

// attestFixture is a server's agent service over a real SQLite store and
// CA, with the join_token and x509pop attestors and roundsAttestor.
type attestFixture struct {
	svc    *AgentService
	store  datastore.DataStore
	bundle *x509bundle.Bundle
	// x509popPayload is an honest x509pop payload: a chain from the
	// attestor's root.
	x509popPayload []byte
}

const fuzzJoinToken = "fuzz-token"

func newAttestFixture(f testing.TB) *attestFixture {
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	store := sqlitetest.Open(f)
	m, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyManager: memory.New(), Store: store})
	if err != nil {
		f.Fatal(err)
	}
	root, err := testpki.NewRoot("x509pop root")
	if err != nil {
		f.Fatal(err)
	}
	leaf, _, err := root.Issue(testpki.Leaf{CommonName: "node-1"})
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	pop, err := x509pop.New(x509pop.Config{TrustDomain: td, Roots: roots, MaxIntermediates: 1})
	if err != nil {
		f.Fatal(err)
	}
	payload, err := json.Marshal(x509pop.AttestationData{Certificates: [][]byte{leaf.Raw}})
	if err != nil {
		f.Fatal(err)
	}
	a := New(Config{TrustDomain: td, DataStore: store, CA: m, Log: slog.New(slog.DiscardHandler), Attestors: map[string]nodeattestor.Attestor{
		jointoken.PluginName: jointoken.New(td, store, time.Now),
		x509pop.PluginName:   pop,
		"fuzz_rounds":        roundsAttestor{td: td},
	}})
	b, err := store.FetchBundle(ctx, td.Name())
	if err != nil {
		f.Fatal(err)
	}
	bundle := x509bundle.New(td)
	for _, c := range b.X509Authorities {
		cert, err := x509.ParseCertificate(c.Asn1)
		if err != nil {
			f.Fatal(err)
		}
		bundle.AddX509Authority(cert)
	}
	return &attestFixture{svc: &AgentService{api: a}, store: store, bundle: bundle, x509popPayload: payload}
}

// attestRequest is the first message of an attestation.
func attestRequest(typ string, payload, csr []byte) *agentv1.AttestAgentRequest {
	return &agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data: &types.AttestationData{Type: typ, Payload: payload}, Params: &agentv1.AgentX509SVIDParams{Csr: csr}}}}
}

// challengeAnswer is a later message of an attestation.
func challengeAnswer(b []byte) *agentv1.AttestAgentRequest {
	return &agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: b}}
}

func marshalFuzz(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// framed joins messages as the fuzz input's later messages: each
// length-prefixed, as on a gRPC stream.
func framed(f *testing.F, msgs ...*agentv1.AttestAgentRequest) []byte {
	var out []byte
	for _, m := range msgs {
		out = protowire.AppendBytes(out, marshalFuzz(f, m))
	}
	return out
}

// unframe splits the later messages; like a gRPC stream, it ends at the
// first that does not frame or decode (the agent's stream broke there).
func unframe(b []byte) []*agentv1.AttestAgentRequest {
	var msgs []*agentv1.AttestAgentRequest
	for len(b) > 0 {
		m, n := protowire.ConsumeBytes(b)
		if n < 0 {
			break
		}
		b = b[n:]
		var r agentv1.AttestAgentRequest
		if proto.Unmarshal(m, &r) != nil {
			break
		}
		msgs = append(msgs, &r)
	}
	return msgs
}

// FuzzAttestAgent runs AttestAgent, the server's handler of an agent's
// attestation stream, on arbitrary streams: a first message (params: the
// attestation type, payload and CSR) and the messages that follow it
// (challenge responses, or anything else). Whatever the stream, the
// handler must not panic; it must refuse with a gRPC code a client can act
// on (never OK, Unknown or Internal), or give up on the stream's end;
// it must send no more than MaxChallengeRounds challenges; and only when it
// returns nil may it have sent a result, last, holding an agent SVID that
// verifies against the CA's bundle, names an agent in the trust domain,
// certifies the CSR's key, and is the one stored for that agent.
func FuzzAttestAgent(f *testing.F) {
	fx := newAttestFixture(f)
	csr := seedCSR(f)
	withURI := seedCSR(f, "spiffe://example.org/spire/agent/evil")
	answers := func(n int) []*agentv1.AttestAgentRequest {
		var m []*agentv1.AttestAgentRequest
		for i := range n {
			m = append(m, challengeAnswer([]byte{byte(i)}))
		}
		return m
	}
	for _, seed := range []struct {
		first *agentv1.AttestAgentRequest
		rest  []*agentv1.AttestAgentRequest
	}{
		{attestRequest(jointoken.PluginName, []byte(fuzzJoinToken), csr), nil},
		{attestRequest(jointoken.PluginName, []byte(fuzzJoinToken), withURI), nil},
		{attestRequest(jointoken.PluginName, []byte("no-such-token"), csr), nil},
		{attestRequest(jointoken.PluginName, []byte("../a/b"), csr), nil},
		{attestRequest(jointoken.PluginName, []byte(fuzzJoinToken), csr[:len(csr)-2]), nil},
		{attestRequest(x509pop.PluginName, fx.x509popPayload, csr), []*agentv1.AttestAgentRequest{challengeAnswer([]byte(`{"ecdsa_signature":{"nonce":"AAAA","r":"AQ==","s":"AQ=="}}`))}},
		{attestRequest(x509pop.PluginName, fx.x509popPayload, csr), []*agentv1.AttestAgentRequest{challengeAnswer([]byte(`{"rsa_signature":{"nonce":"AAAA","signature":"AQ=="}}`))}},
		{attestRequest(x509pop.PluginName, fx.x509popPayload, csr), []*agentv1.AttestAgentRequest{attestRequest(x509pop.PluginName, fx.x509popPayload, csr)}},
		{attestRequest(x509pop.PluginName, []byte(`{"certificates":["AAAA"]}`), csr), nil},
		{attestRequest("fuzz_rounds", []byte{3}, csr), answers(3)},
		{attestRequest("fuzz_rounds", []byte{MaxChallengeRounds}, csr), answers(MaxChallengeRounds)},
		{attestRequest("fuzz_rounds", []byte{MaxChallengeRounds + 1}, csr), answers(MaxChallengeRounds + 1)},
		{attestRequest("fuzz_rounds", []byte{2}, csr), []*agentv1.AttestAgentRequest{challengeAnswer([]byte{0}), {}}},
		{attestRequest("no_such_type", nil, csr), nil},
		{&agentv1.AttestAgentRequest{}, nil},
		{challengeAnswer([]byte("first")), nil},
		{attestRequest("", nil, csr), nil},
		{&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{Data: &types.AttestationData{Type: jointoken.PluginName}}}}, nil},
	} {
		f.Add(marshalFuzz(f, seed.first), framed(f, seed.rest...))
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, first, rest []byte) {
		var req agentv1.AttestAgentRequest
		if proto.Unmarshal(first, &req) != nil {
			return // gRPC refuses the stream before the handler sees it
		}
		// Every input finds the same token, so that an input replays the
		// same way, whatever ran before it.
		if err := fx.store.CreateJoinToken(ctx, &datastore.JoinToken{Token: fuzzJoinToken, ExpiresAt: time.Now().Add(time.Hour)}); err != nil && !errors.Is(err, datastore.ErrAlreadyExists) {
			t.Fatal(err)
		}
		s := &attestStream{ctx: ctx, in: append([]*agentv1.AttestAgentRequest{&req}, unframe(rest)...)}
		err := fx.svc.AttestAgent(s)

		challenges := 0
		for i, r := range s.out {
			switch {
			case r.GetChallenge() != nil:
				challenges++
			case r.GetResult() != nil && i == len(s.out)-1 && err == nil:
			default:
				t.Fatalf("message %d of %d sent (err %v): %v", i, len(s.out), err, r)
			}
		}
		if challenges > MaxChallengeRounds {
			t.Fatalf("%d challenges sent, at most %d allowed", challenges, MaxChallengeRounds)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			st, ok := status.FromError(err)
			if !ok {
				t.Fatalf("refused without a gRPC status: %v", err)
			}
			switch st.Code() {
			case codes.OK, codes.Unknown, codes.Internal:
				t.Fatalf("refused with %v: %v", st.Code(), err)
			}
			return
		}
		if len(s.out) == 0 {
			t.Fatal("returned nil without sending a result")
		}
		checkAttestResult(t, fx, req.GetParams().GetParams().GetCsr(), s.out[len(s.out)-1].GetResult())
	})
}

// checkAttestResult checks an accepted attestation's result, then deletes
// the agent it stored, so that the next input starts from the same store.
func checkAttestResult(t *testing.T, fx *attestFixture, csrDER []byte, res *agentv1.AttestAgentResponse_Result) {
	ctx := context.Background()
	chain := res.GetSvid().GetCertChain()
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("result chain: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("result without an SVID")
	}
	id, _, err := x509svid.Verify(certs, fx.bundle)
	if err != nil {
		t.Fatalf("agent SVID does not verify against the CA's bundle: %v", err)
	}
	if id.TrustDomain() != fx.bundle.TrustDomain() || !strings.HasPrefix(id.Path(), "/spire/agent/") {
		t.Fatalf("agent SVID for %s", id)
	}
	if got := protoIDString(res.Svid.Id); got != id.String() {
		t.Fatalf("result names %s, its SVID %s", got, id)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatalf("accepted an unparsable CSR: %v", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, certs[0].RawSubjectPublicKeyInfo) {
		t.Fatal("agent SVID certifies a key other than the CSR's")
	}
	node, err := fx.store.DeleteAttestedNode(ctx, id.String())
	if err != nil {
		t.Fatalf("accepted agent %s not stored: %v", id, err)
	}
	if node.CertSerial != certs[0].SerialNumber.String() {
		t.Fatalf("stored serial %s, issued %s", node.CertSerial, certs[0].SerialNumber)
	}
	fx.svc.api.nodes.forget(id.String())
}
