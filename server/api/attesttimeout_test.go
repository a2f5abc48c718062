package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// silentStream is an AttestAgent stream whose agent sends the given
// messages and then nothing at all: Recv blocks until the stream ends, as
// on a connection whose peer went quiet.
type silentStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   chan *agentv1.AttestAgentRequest
	sent chan *agentv1.AttestAgentResponse
}

func (s *silentStream) Context() context.Context { return s.ctx }

func (s *silentStream) Send(r *agentv1.AttestAgentResponse) error {
	s.sent <- r
	return nil
}

func (s *silentStream) Recv() (*agentv1.AttestAgentRequest, error) {
	select {
	case r := <-s.in:
		return r, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// TestAttestAgentSilentPeer shows a stream that sends nothing, or stops
// before answering a challenge, is ended with DeadlineExceeded after the
// message timeout instead of holding its handler (and its connection's
// in-flight count) forever.
func TestAttestAgentSilentPeer(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	const timeout = 100 * time.Millisecond
	a := New(Config{TrustDomain: td, AttestMessageTimeout: timeout, Log: slog.New(slog.DiscardHandler),
		Attestors: map[string]nodeattestor.Attestor{"fuzz_rounds": roundsAttestor{td: td}}})
	svc := &AgentService{api: a}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		first []*agentv1.AttestAgentRequest
		want  string
	}{
		{"no first message", nil, "no attestation parameters within"},
		// One challenge round, never answered.
		{"no challenge response", []*agentv1.AttestAgentRequest{attestRequest("fuzz_rounds", []byte{1}, csr)}, "no challenge response within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := &silentStream{ctx: ctx, in: make(chan *agentv1.AttestAgentRequest, len(tc.first)), sent: make(chan *agentv1.AttestAgentResponse, 4)}
			for _, m := range tc.first {
				s.in <- m
			}
			done := make(chan error, 1)
			go func() { done <- svc.AttestAgent(s) }()
			select {
			case err := <-done:
				if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("AttestAgent = %v, want DeadlineExceeded %q", err, tc.want)
				}
			case <-ctx.Done():
				t.Fatal("AttestAgent still waiting on a silent stream after 10 s")
			}
			if len(tc.first) > 0 && len(s.sent) != 1 {
				t.Fatalf("%d challenges sent, want 1 before the wait", len(s.sent))
			}
		})
	}
}
