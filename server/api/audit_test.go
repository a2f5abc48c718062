package api_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestAuditLog: with audit_log_enabled every authorized call writes
// SPIRE's "API accessed" line, successful or not, with the caller and
// request fields, and never a join token; without it, none is written.
func TestAuditLog(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := s.Admin(t)
	if _, err := entryv1.NewEntryClient(admin).ListEntries(ctx, &entryv1.ListEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	l := logs.waitLine(t, "API accessed", "type=audit", "service=entry.v1.Entry", "method=ListEntries", "status=success", "request_id=")
	if strings.Contains(l, "caller_addr=") {
		t.Errorf("local call with caller_addr: %s", l)
	}
	// A local caller is named by its kernel credentials, as SPIRE's are:
	// this test process is the caller.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("caller_uid=%d", os.Getuid()), fmt.Sprintf("caller_gid=%d", os.Getgid()), "caller_path=" + exe} {
		if !strings.Contains(l, want) {
			t.Errorf("local call's audit line lacks %s: %s", want, l)
		}
	}

	// Health checks succeed unaudited, as in SPIRE (an orchestrator
	// probes them every few seconds).
	if _, err := healthpb.NewHealthClient(admin).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	_, err = agentv1.NewAgentClient(admin).GetAgent(ctx, &agentv1.GetAgentRequest{Id: pid("/spire/agent/join_token/none")})
	wantCode(t, err, codes.NotFound)
	logs.waitLine(t, "API accessed", "method=GetAgent", "status=error", "status_code=NotFound", "status_message=", "spiffe_id=spiffe://example.org/spire/agent/join_token/none")

	const chosen = "bad token with spaces"
	_, err = agentv1.NewAgentClient(admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 60, Token: chosen})
	wantCode(t, err, codes.InvalidArgument)
	logs.waitLine(t, "API accessed", "method=CreateJoinToken", "status=error", "status_code=InvalidArgument", "ttl=60")

	agent := s.NewAgent(t)
	logs.waitLine(t, "API accessed", "method=AttestAgent", "status=success", "node_attestor_type=join_token", "caller_addr=127.0.0.1:")
	if _, err := entryv1.NewEntryClient(agent.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	if l := logs.waitLine(t, "API accessed", "method=GetAuthorizedEntries", "status=success", "caller_id="+agent.ID.String(), "caller_addr=127.0.0.1:"); strings.Contains(l, "caller_uid=") {
		t.Errorf("a TCP caller with local credentials: %s", l)
	}

	// A batch gives one line per item, with the item's own status.
	resp, err := entryv1.NewEntryClient(admin).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{
		{SpiffeId: pid("/audited"), ParentId: idOf(agent.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:7"}}},
		{SpiffeId: pid("/spire/reserved"), ParentId: idOf(agent.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:8"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", "method=BatchCreateEntry", "status=success", "spiffe_id=spiffe://example.org/audited", "parent_id="+agent.ID.String(), "selectors=unix:uid:7")
	logs.waitLine(t, "API accessed", "method=BatchCreateEntry", "status=error", "status_code=InvalidArgument", "spiffe_id=spiffe://example.org/spire/reserved")
	if n := len(logs.lines("API accessed", "method=BatchCreateEntry")); n != 2 {
		t.Errorf("%d audit lines for a batch of two", n)
	}
	_, csr := servertest.NewCSR(t)
	svids, err := svidv1.NewSVIDClient(agent.Conn).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{
		{EntryId: resp.Results[0].Entry.Id, Csr: csr}, {EntryId: "unknown", Csr: csr},
	}})
	if err != nil || codes.Code(svids.Results[0].Status.Code) != codes.OK {
		t.Fatalf("BatchNewX509SVID: %v %v", svids, err)
	}
	logs.waitLine(t, "API accessed", "method=BatchNewX509SVID", "status=success", "entry_id="+resp.Results[0].Entry.Id, "spiffe_id=spiffe://example.org/audited", "csr=", "expires_at=")
	logs.waitLine(t, "API accessed", "method=BatchNewX509SVID", "status=error", "status_code=PermissionDenied", "entry_id=unknown")

	// A wrong join token is audited as an error, without its value.
	err = attestWrong(ctx, t, s, s.Dial(t, nil), "join_token", []byte(wrongToken))
	wantCode(t, err, codes.PermissionDenied)
	logs.waitLine(t, "API accessed", "method=AttestAgent", "status=error", "status_code=PermissionDenied")
	if l := logs.lines("API accessed", "service=Health"); len(l) != 0 {
		t.Errorf("successful health checks audited: %q", l)
	}
	if all := logs.String(); strings.Contains(all, wrongToken) || strings.Contains(all, chosen) {
		t.Errorf("a join token is in the log:\n%s", all)
	}

	quiet := &logBuffer{}
	s2 := servertest.Start(t, servertest.Options{Log: quiet})
	if _, err := entryv1.NewEntryClient(s2.Admin(t)).ListEntries(ctx, &entryv1.ListEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	s2.NewAgent(t)
	if l := quiet.lines("API accessed"); len(l) != 0 {
		t.Errorf("audit lines without audit_log_enabled: %q", l)
	}
}

// TestAuditLogUnspentToken: a join token is part of its agent's ID, so an
// attestation that fails after the attestor named the agent (here: the
// node is banned) is audited with the token redacted from agent_id, since
// the failed attestation did not spend it.
func TestAuditLogUnspentToken(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := agentv1.NewAgentClient(s.Admin(t))
	const token = "kept-secret-token-1"
	id := "spiffe://example.org/spire/agent/join_token/" + token
	if _, err := admin.CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600, Token: token}); err != nil {
		t.Fatal(err)
	}
	key, csr := servertest.NewCSR(t)
	if _, err := s.AttestJoinToken(ctx, s.Dial(t, nil), token, key, csr); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.BanAgent(ctx, &agentv1.BanAgentRequest{Id: pid("/spire/agent/join_token/" + token)}); err != nil {
		t.Fatal(err)
	}
	// The same value again: it attests the banned node's ID.
	if _, err := admin.CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600, Token: token}); err != nil {
		t.Fatal(err)
	}
	_, err := s.AttestJoinToken(ctx, s.Dial(t, nil), token, key, csr)
	wantCode(t, err, codes.PermissionDenied)
	l := logs.waitLine(t, "API accessed", "method=AttestAgent", "status=error", "status_code=PermissionDenied")
	if strings.Contains(l, token) || !strings.Contains(l, "agent_id=spiffe://example.org/spire/agent/join_token/[redacted]") {
		t.Errorf("audit line of a refused attestation with a live token: %s", l)
	}
	if l := logs.lines("API accessed", "method=AttestAgent", "status=success"); len(l) != 1 || !strings.Contains(l[0], "agent_id="+id) {
		t.Errorf("audit line of the attestation that spent the token: %q, want its agent_id", l)
	}
}
