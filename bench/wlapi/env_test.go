package wlapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	agentapi "github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
)

// cacheManager is the agent manager's Workload API side over the real
// agent cache, as agent/manager serves it once every SVID is held: no
// server, so nothing but the cache answers.
type cacheManager struct{ c *cache.Cache }

func (m cacheManager) SubscribeToCacheChanges(ctx context.Context, sels []*types.Selector) (cache.Subscription, error) {
	return m.c.Subscribe(ctx, sels), nil
}

func (m cacheManager) FetchWorkloadUpdate(sels []*types.Selector) *cache.WorkloadUpdate {
	return m.c.FetchWorkloadUpdate(sels)
}

func (m cacheManager) FetchJWTSVID(context.Context, *types.Entry, []string) (*cache.JWTSVID, error) {
	return nil, fmt.Errorf("wlapi bench: no JWT-SVIDs")
}

// agent is a Workload API server as the agent runs it, in a process of
// its own (as the agent is to its workloads) or in this one.
type agent struct {
	// mode names the build it runs: "current" (this test binary) or
	// "baseline" (BENCH_WLAPI_BASELINE).
	mode   string
	socket string
	want   spiffeid.ID
	cmd    *exec.Cmd
	out    *bufio.Reader
}

// serverTimes returns the agent process's server times (see serverTimes)
// since the last call.
func (a *agent) serverTimes() ([]time.Duration, error) {
	if err := a.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return nil, err
	}
	return readTimes(a.out)
}

// Environment of the agent process the bench re-executes itself as.
const (
	socketEnv  = "WLAPI_AGENT_SOCKET"
	profileEnv = "WLAPI_AGENT_PROFILE"
)

// TestAgentProcess is the agent process: it serves until SIGTERM, writing
// a CPU profile of its whole life if asked to. TestMain leaves it out of
// plain runs.
func TestAgentProcess(t *testing.T) {
	socket := os.Getenv(socketEnv)
	if socket == "" {
		t.Fatal("TestAgentProcess is the bench's agent process: spawnAgent runs it with " + socketEnv + " set")
	}
	if p := os.Getenv(profileEnv); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	st := &serverTimes{}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			os.Stdout.WriteString(timesLine(st.take()))
		}
	}()
	serveAgent(ctx, t, socket, st)
}

// spawnAgent starts the agent process from the test binary bin (named
// mode) and waits for its socket. profile, if not empty, is where it
// writes its CPU profile.
func spawnAgent(t testing.TB, mode, bin, profile string) *agent {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(bin, "-test.run=^TestAgentProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), socketEnv+"="+socket, profileEnv+"="+profile)
	// BENCH_WLAPI_AGENT_GOMAXPROCS=<n> runs the agents with n Ps, to see
	// what the hand-offs between their threads cost.
	if p := os.Getenv("BENCH_WLAPI_AGENT_GOMAXPROCS"); p != "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+p)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agent{mode: mode, socket: socket, want: spiffeIDWant(), cmd: cmd, out: bufio.NewReader(out)}
	t.Cleanup(func() { a.stop(t) })
	waitSocket(t, socket)
	return a
}

// stop ends the agent process (which then writes its profile).
func (a *agent) stop(t testing.TB) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	_, _ = io.Copy(io.Discard, a.out)
	if err := a.cmd.Wait(); err != nil {
		t.Errorf("agent process (%s): %v", a.mode, err)
	}
	a.cmd = nil
}

var benchTD = spiffeid.RequireTrustDomainFromString("example.org")

// spiffeIDWant is the SPIFFE ID this process's uid is served.
func spiffeIDWant() spiffeid.ID { return spiffeid.RequireFromPath(benchTD, "/workload/0") }

func waitSocket(t testing.TB, socket string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("workload API socket never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveAgent serves the Workload API on socket until ctx is done, with the
// unix attestor and a cache holding one SVID for this process's uid (and
// entries for other uids, as an agent's cache holds). It serves as
// workloadapi.Serve does (same connection limits and gRPC options), with
// each connection timed into st.
func serveAgent(ctx context.Context, t testing.TB, socket string, st *serverTimes, opts ...grpc.ServerOption) {
	t.Helper()
	td := benchTD
	ca := workloadapitest.NewCA(t, td)
	c := cache.New(td, time.Now, nil)
	var entries []*types.Entry
	svids := map[string]cache.Identity{}
	for i := range 10 {
		id := ca.Issue(t, fmt.Sprintf("/workload/%d", i))
		uid := os.Getuid()
		if i > 0 {
			uid = 100000 + i
		}
		id.Entry.ParentId = &types.SPIFFEID{TrustDomain: td.Name(), Path: "/spire/agent/join_token/x"}
		id.Entry.Selectors = []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", uid)}}
		id.Entry.RevisionNumber = 1
		entries = append(entries, id.Entry)
		svids[id.Entry.Id] = id
	}
	c.SetBundle(ca.Bundle())
	c.SetEntries(entries)
	c.SetSVIDs(svids)

	cfg := agentapi.Config{
		Manager:     cacheManager{c},
		Attestors:   []agentapi.Attestor{unix.New(unix.Config{})},
		TrustDomain: td,
		// The agent logs as text at INFO (logging.New); With pre-formats
		// attributes there, which a discarding handler would not show.
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	l, err := agentapi.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	s, err := agentapi.NewServer(agentapi.New(cfg), append(agentapi.ServerOptions(agentapi.Limits{}), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(agentapi.LimitListener(timedListener{l, st}, agentapi.Limits{}, cfg.Log)) }()
	select {
	case <-ctx.Done():
		s.Stop()
		<-errc
	case err := <-errc:
		t.Fatal(err)
	}
}
