package api_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/servertest"
)

// TestResidentKeyAgentCannotRenew: an agent whose node carries
// tpm:agent_key:resident proved at attestation that its SVID key never
// leaves its TPM; a renewal would certify a new key without that proof, so
// it is refused with the reason upstream agents re-attest on. The node is
// a join-token one (not reattestable) given the selector in the database,
// so the refusal is this rule's and not the one of reattestable nodes; the
// same agent renews before the selector is added.
func TestResidentKeyAgentCannotRenew(t *testing.T) {
	log := &syncbuf.Buffer{}
	s := servertest.Start(t, servertest.Options{Log: log})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := s.NewAgent(t)
	renew := func() error {
		_, csr := servertest.NewCSR(t)
		_, err := agentv1.NewAgentClient(a.Conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}})
		return err
	}
	if err := renew(); err != nil {
		t.Fatalf("agent without the selector cannot renew: %v", err)
	}

	ds, err := sqlstore.Open(ctx, sqlstore.Config{DatabaseType: sqlstore.SQLite, ConnectionString: filepath.Join(s.Dir, "datastore.sqlite3")})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	node, err := ds.FetchAttestedNode(ctx, a.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if node.CanReattest {
		t.Fatal("join-token node is reattestable: the test would not isolate the resident-key rule")
	}
	node.Selectors = append(node.Selectors, &types.Selector{Type: "tpm", Value: "agent_key:resident"})
	if err := ds.UpdateAttestedNode(ctx, node, node.Serials()); err != nil {
		t.Fatal(err)
	}

	err = renew()
	wantCode(t, err, codes.PermissionDenied)
	if r := deniedReason(err); r != types.PermissionDeniedDetails_AGENT_MUST_REATTEST {
		t.Fatalf("refusal carries reason %v, want AGENT_MUST_REATTEST", r)
	}
	if !strings.Contains(err.Error(), "must re-attest to prove its new key") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	// The refusal is in the security log with its reason; the
	// interceptor writes it after the handler returns, so wait for it.
	for !logged(log.String()) {
		if ctx.Err() != nil {
			t.Fatalf("refusal not logged with its reason:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logged(out string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "API call refused") && strings.Contains(line, "RenewAgent") && strings.Contains(line, "must re-attest to prove its new key") {
			return true
		}
	}
	return false
}
