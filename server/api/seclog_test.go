package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// logBuffer collects the server's log lines; the server writes from many
// goroutines.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the log lines with msg and every one of fields
// (`key=value` as the text handler writes them).
func (b *logBuffer) lines(msg string, fields ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if !strings.Contains(l, "msg=\""+msg+"\"") && !strings.Contains(l, "msg="+msg+" ") {
			continue
		}
		ok := true
		for _, f := range fields {
			if !strings.Contains(l, f) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// waitLine waits for one line with msg and fields: some lines are written
// after the response has reached the client.
func (b *logBuffer) waitLine(t *testing.T, msg string, fields ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := b.lines(msg, fields...); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line with %q in:\n%s", msg, fields, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wrongToken is a well-formed join token that was never issued; its value
// must never reach the log.
const wrongToken = "5f1c9e2a-7b3d-4c8e-9a01-d2e3f4a5b6c7"

// attestWrong runs an attestation that the server must refuse, and
// returns the refusal.
func attestWrong(ctx context.Context, t *testing.T, s *servertest.Server, conn *grpc.ClientConn, typ string, payload []byte) error {
	_, csr := servertest.NewCSR(t)
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return err
	}
	// A server that refuses before reading (the rate limit) may have
	// closed the stream already: Send then says only EOF, and Recv
	// returns the status.
	_ = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: typ, Payload: payload},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	resp, err := stream.Recv()
	if err == nil {
		t.Errorf("attestation with %s %q: got %v, want a refusal", typ, payload, resp)
	}
	return err
}

// TestSecurityLog checks that every kind of refusal gives its line, with
// the fields an operator needs and without the secret. Each refusal comes
// from its own source address, since refusals of one kind from one source
// share a line per interval.
func TestSecurityLog(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("wrong join token", func(t *testing.T) {
		err := attestWrong(ctx, t, s, s.DialFrom(t, "127.0.0.2", nil), "join_token", []byte(wrongToken))
		wantCode(t, err, codes.PermissionDenied)
		l := logs.waitLine(t, "Agent attestation refused", "node_attestor_type=join_token", "caller_addr=127.0.0.2:", "code=PermissionDenied", "reason=")
		t.Log(l)
	})
	t.Run("unknown attestor", func(t *testing.T) {
		err := attestWrong(ctx, t, s, s.DialFrom(t, "127.0.0.3", nil), "no_such_attestor", []byte("x"))
		wantCode(t, err, codes.FailedPrecondition)
		logs.waitLine(t, "Agent attestation refused", "node_attestor_type=no_such_attestor", "caller_addr=127.0.0.3:", "code=FailedPrecondition")
	})
	t.Run("invalid CSR in attestation", func(t *testing.T) {
		stream, err := agentv1.NewAgentClient(s.DialFrom(t, "127.0.0.4", nil)).AttestAgent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
			Data:   &types.AttestationData{Type: "join_token", Payload: []byte(wrongToken)},
			Params: &agentv1.AgentX509SVIDParams{Csr: []byte("not a CSR")},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantCode(t, err, codes.InvalidArgument)
		logs.waitLine(t, "Invalid CSR refused", "api=AttestAgent", "caller_id=unauthenticated", "caller_addr=127.0.0.4:", "reason=\"malformed CSR")
		logs.waitLine(t, "Agent attestation refused", "caller_addr=127.0.0.4:", "code=InvalidArgument")
	})
	t.Run("admin call over TCP without a certificate", func(t *testing.T) {
		_, err := entryv1.NewEntryClient(s.DialFrom(t, "127.0.0.5", nil)).ListEntries(ctx, &entryv1.ListEntriesRequest{})
		wantCode(t, err, codes.PermissionDenied)
		logs.waitLine(t, "API call refused", "service=entry.v1.Entry", "method=ListEntries", "caller_id=unauthenticated", "caller_addr=127.0.0.5:", "code=PermissionDenied")
	})

	agent := s.NewAgent(t)
	conn := s.DialFrom(t, "127.0.0.6", agent.SVID)
	t.Run("admin call with an agent SVID", func(t *testing.T) {
		_, err := agentv1.NewAgentClient(conn).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 60})
		wantCode(t, err, codes.PermissionDenied)
		logs.waitLine(t, "API call refused", "method=CreateJoinToken", "caller_id="+agent.ID.String(), "caller_addr=127.0.0.6:", "code=PermissionDenied")
	})
	t.Run("invalid CSR in renewal and SVID signing", func(t *testing.T) {
		entry := createEntry(t, s.Admin(t), &types.Entry{SpiffeId: pid("/w"), ParentId: idOf(agent.ID), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}})
		resp, err := svidv1.NewSVIDClient(conn).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{{EntryId: entry.Id, Csr: []byte{0x30, 0x00}}}})
		if err != nil {
			t.Fatal(err)
		}
		if c := codes.Code(resp.Results[0].Status.Code); c != codes.InvalidArgument {
			t.Fatalf("bad CSR: %v", resp.Results[0].Status)
		}
		logs.waitLine(t, "Invalid CSR refused", "api=BatchNewX509SVID", "caller_id="+agent.ID.String(), "caller_addr=127.0.0.6:")
		_, err = agentv1.NewAgentClient(conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: []byte("junk")}})
		wantCode(t, err, codes.InvalidArgument)
		logs.waitLine(t, "Invalid CSR refused", "api=RenewAgent", "caller_id="+agent.ID.String())
	})
	t.Run("ban and evict", func(t *testing.T) {
		banned, evicted := s.NewAgent(t), s.NewAgent(t)
		admin := agentv1.NewAgentClient(s.Admin(t))
		if _, err := admin.BanAgent(ctx, &agentv1.BanAgentRequest{Id: idOf(banned.ID)}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: idOf(evicted.ID)}); err != nil {
			t.Fatal(err)
		}
		logs.waitLine(t, "Agent banned", "agent_id="+banned.ID.String(), "caller_id=local")
		logs.waitLine(t, "Agent evicted", "agent_id="+evicted.ID.String(), "caller_id=local")
		// The banned agent's next call is refused, and says who it was.
		_, err := entryv1.NewEntryClient(s.DialFrom(t, "127.0.0.7", banned.SVID)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
		wantCode(t, err, codes.PermissionDenied)
		logs.waitLine(t, "API call refused", "method=GetAuthorizedEntries", "caller_id="+banned.ID.String(), "caller_addr=127.0.0.7:", "banned")
	})

	all := logs.String()
	if strings.Contains(all, wrongToken) {
		t.Errorf("the wrong join token's value is in the log:\n%s", all)
	}
	for _, l := range logs.lines("Agent attestation refused") {
		if !strings.Contains(l, "level=WARN") {
			t.Errorf("refusal not at WARN: %s", l)
		}
	}
}
