package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// purgeAgents serves ListAgents (two agents per page) and DeleteAgent over
// a real Unix socket, recording what the command asked for.
type purgeAgents struct {
	agentv1.UnimplementedAgentServer
	mu       sync.Mutex
	agents   []*types.Agent
	failIDs  map[string]bool
	lists    []*agentv1.ListAgentsRequest
	deleted  []string
	deleting bool
}

func (s *purgeAgents) ListAgents(_ context.Context, req *agentv1.ListAgentsRequest) (*agentv1.ListAgentsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists = append(s.lists, proto.Clone(req).(*agentv1.ListAgentsRequest))
	if s.deleting {
		return nil, status.Error(codes.Internal, "listed after deleting began")
	}
	start := 0
	if req.PageToken != "" {
		fmt.Sscan(req.PageToken, &start)
	}
	end := min(start+2, len(s.agents))
	resp := &agentv1.ListAgentsResponse{Agents: s.agents[start:end]}
	if end < len(s.agents) {
		resp.NextPageToken = fmt.Sprint(end)
	}
	return resp, nil
}

func (s *purgeAgents) DeleteAgent(_ context.Context, req *agentv1.DeleteAgentRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleting = true
	id := idString(req.Id)
	if s.failIDs[id] {
		return nil, status.Error(codes.Internal, "datastore unavailable")
	}
	s.deleted = append(s.deleted, id)
	return &emptypb.Empty{}, nil
}

func servePurge(t *testing.T, s *purgeAgents) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "purge")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sock
}

func TestAgentPurge(t *testing.T) {
	now := time.Now()
	agent := func(name string, expiredAgo time.Duration) *types.Agent {
		return &types.Agent{Id: sid("example.org", "/spire/agent/x509pop/"+name), X509SvidExpiresAt: now.Add(-expiredAgo).Unix()}
	}
	newServer := func() *purgeAgents {
		return &purgeAgents{agents: []*types.Agent{
			agent("old", 40*24*time.Hour), agent("fresh", -time.Hour), agent("older", 90*24*time.Hour),
			agent("week", 7*24*time.Hour), agent("broken", 31*24*time.Hour),
		}, failIDs: map[string]bool{"spiffe://example.org/spire/agent/x509pop/broken": true}}
	}

	t.Run("dry run deletes nothing", func(t *testing.T) {
		s := newServer()
		code, stdout, stderr := runMain("agent", "purge", "-dryRun", "-socketPath", servePurge(t, s))
		want := "Found 3 expired agents\n\n\nAgents that can be purged:\n" +
			"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/old\n" +
			"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/older\n" +
			"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/broken\n"
		if code != 0 || stdout != want || stderr != "" {
			t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
		}
		if len(s.deleted) != 0 {
			t.Fatalf("dry run deleted %v", s.deleted)
		}
		// Every page was read, and only agents that can re-attest were
		// asked for: a TOFU agent deleted could never come back.
		if len(s.lists) != 3 {
			t.Fatalf("%d ListAgents calls, want 3 pages", len(s.lists))
		}
		for _, r := range s.lists {
			if r.GetFilter().GetByCanReattest() == nil || !r.GetFilter().GetByCanReattest().Value || !r.GetOutputMask().GetX509SvidExpiresAt() {
				t.Fatalf("request %v does not ask for re-attestable agents and their expiry", r)
			}
		}
	})

	t.Run("purge reports each agent", func(t *testing.T) {
		s := newServer()
		code, stdout, stderr := runMain("agent", "purge", "-socketPath", servePurge(t, s))
		want := "Found 3 expired agents\n\n" +
			"Agents purged:\n" +
			"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/old\n" +
			"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/older\n" +
			"Agents not purged:\n" +
			"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/broken\n" +
			"Error             : rpc error: code = Internal desc = datastore unavailable\n"
		if code != 0 || stdout != want || stderr != "" {
			t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
		}
		if strings.Join(s.deleted, " ") != "spiffe://example.org/spire/agent/x509pop/old spiffe://example.org/spire/agent/x509pop/older" {
			t.Fatalf("deleted %v", s.deleted)
		}
	})

	t.Run("expiredFor and json", func(t *testing.T) {
		s := newServer()
		code, stdout, _ := runMain("agent", "purge", "-expiredFor", "24h", "-output", "json", "-socketPath", servePurge(t, s))
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		requireJSONEq(t, `[{"expired_agents":[
			{"agent_id":"spiffe://example.org/spire/agent/x509pop/old","deleted":true},
			{"agent_id":"spiffe://example.org/spire/agent/x509pop/older","deleted":true},
			{"agent_id":"spiffe://example.org/spire/agent/x509pop/week","deleted":true},
			{"agent_id":"spiffe://example.org/spire/agent/x509pop/broken","deleted":false,"error":"rpc error: code = Internal desc = datastore unavailable"}]}]`, stdout)
	})

	t.Run("nothing to purge", func(t *testing.T) {
		s := &purgeAgents{agents: []*types.Agent{agent("fresh", -time.Hour)}}
		code, stdout, _ := runMain("agent", "purge", "-socketPath", servePurge(t, s))
		if code != 0 || stdout != "No agents to purge.\n" {
			t.Fatalf("exit %d, %q", code, stdout)
		}
		code, stdout, _ = runMain("agent", "purge", "-output", "json", "-socketPath", servePurge(t, s))
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		requireJSONEq(t, `[{"expired_agents":[]}]`, stdout)
	})

	t.Run("list fails", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "none.sock")
		code, _, stderr := runMain("agent", "purge", "-socketPath", missing)
		if code != 1 || !strings.HasPrefix(stderr, "Error: failed to list agents: rpc error: code = Unavailable") {
			t.Fatalf("exit %d, %q", code, stderr)
		}
	})
}
