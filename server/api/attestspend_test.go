package api

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// lateSpendAttestor passes any join token, as the join_token attestor
// passes one that a concurrent attestation spends after the check: the
// payload is "token/node", and the result names the token to spend.
type lateSpendAttestor struct{ td spiffeid.TrustDomain }

func (lateSpendAttestor) Type() string { return "late_spend" }

func (a lateSpendAttestor) Attest(_ context.Context, payload []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	token, node, _ := strings.Cut(string(payload), "/")
	return &nodeattestor.Result{AgentID: spiffeid.RequireFromSegments(a.td, "spire", "agent", "late_spend", node), JoinToken: token}, nil
}

// TestAttestSpendsTokenWithNode: the token is spent in the write that
// records the node, and an attestation whose token was spent after its
// check (the loser of a race) is refused as a used token, its SVID
// unsent and the node the winner wrote left as it is, on the create path
// (a new node) and the update path (the winner's node).
func TestAttestSpendsTokenWithNode(t *testing.T) {
	fx := newAttestFixture(t)
	fx.svc.api.cfg.Attestors["late_spend"] = lateSpendAttestor{td: spiffeid.RequireTrustDomainFromString("example.org")}
	ctx := context.Background()
	if err := fx.store.CreateJoinToken(ctx, &datastore.JoinToken{Token: "once", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	csr := seedCSR(t)
	attest := func(payload string) (*attestStream, error) {
		s := &attestStream{ctx: ctx, in: []*agentv1.AttestAgentRequest{attestRequest("late_spend", []byte(payload), csr)}}
		return s, fx.svc.AttestAgent(s)
	}
	s, err := attest("once/winner")
	if err != nil || len(s.out) != 1 {
		t.Fatalf("attestation: %v, %d messages sent", err, len(s.out))
	}
	checkAttestResult(t, fx, csr, s.out[0].GetResult())
	if _, err := fx.store.FetchJoinToken(ctx, "once"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("token after the attestation: %v, want it spent", err)
	}
	// checkAttestResult removed the winner's node: record it again (the
	// store keeps it now) to check the update path leaves it alone.
	winner := &datastore.AttestedNode{SPIFFEID: "spiffe://example.org/spire/agent/late_spend/winner", AttestationType: "late_spend", CertSerial: "7"}
	if err := fx.store.CreateAttestedNode(ctx, winner); err != nil {
		t.Fatal(err)
	}
	for _, payload := range []string{"once/loser", "once/winner", "never/other"} {
		s, err := attest(payload)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "already been used") {
			t.Errorf("%s: %v, want PermissionDenied, token already used", payload, err)
		}
		if len(s.out) != 0 {
			t.Errorf("%s: sent %d messages after a refused spend", payload, len(s.out))
		}
	}
	if _, err := fx.store.FetchAttestedNode(ctx, "spiffe://example.org/spire/agent/late_spend/loser"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("the loser's node: %v, want none", err)
	}
	if n, err := fx.store.FetchAttestedNode(ctx, winner.SPIFFEID); err != nil || n.CertSerial != "7" {
		t.Errorf("the winner's node = %+v, %v; want serial 7", n, err)
	}
}
