package flood

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	agentapi "github.com/spiffe-hw/spire-hw/agent/workloadapi"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// fullSize is set by BENCH_REPORT=1: the agent bench then runs at the size
// the report quotes and writes it; otherwise it runs tiny and checks only
// its invariants.
var fullSize = os.Getenv("BENCH_REPORT") == "1"

func size(tiny, full int) int {
	if fullSize {
		return full
	}
	return tiny
}

// Environment of the processes the agent bench re-executes itself as.
const (
	// agentSocketEnv makes TestAgentProcess serve the Workload API there.
	agentSocketEnv = "FLOOD_AGENT_SOCKET"
	// agentModeEnv is agentBefore or agentAfter.
	agentModeEnv = "FLOOD_AGENT_MODE"
	// flooderEnv makes the binary a flooder of that many connections.
	flooderEnv = "FLOOD_AGENT_FLOODER"
)

// The two agents compared.
const (
	// agentBefore serves as the agent did before connection limits: no
	// caps, gRPC's default timeouts (120 s handshake, never idle) and
	// buffers.
	agentBefore = "before"
	// agentAfter serves as the agent does now: workloadapi.Serve with the
	// default Limits.
	agentAfter = "after"
)

const nobody = 65534

// rounds of rest and flood per agent (one when tiny: the invariants need
// no more, and each round starts a flooder process).
var rounds = size(1, 5)

var benchTD = spiffeid.RequireTrustDomainFromString("example.org")

func init() {
	if v := os.Getenv(flooderEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			err = floodIdle(os.Getenv(agentSocketEnv), n)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "flooder:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// floodIdle opens n connections to sock, completes the HTTP/2 preface on
// each, prints "HELD h REFUSED r", and holds the kept ones, sending
// nothing more, until stdin closes.
func floodIdle(sock string, n int) error {
	conns, refused, err := wltest.Flood(sock, n, wltest.HTTP2Hello, 5*time.Second)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	fmt.Printf("HELD %d REFUSED %d\n", n-refused, refused)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// TestAgentProcess is the agent when TestAgentFlood re-executes the test
// binary: a real Workload API server (agent/workloadapi with the unix
// attestor) serving an SVID to uid 0, until stdin closes.
func TestAgentProcess(t *testing.T) {
	sock := os.Getenv(agentSocketEnv)
	if sock == "" || os.Getenv(flooderEnv) != "" {
		t.Skip("runs only as the agent process that TestAgentFlood starts")
	}
	ca := wltest.NewCA(t, benchTD)
	mgr := wltest.NewManager(t, ca)
	mgr.Set(ca.Issue(t, "/legit"), &types.Selector{Type: "unix", Value: "uid:0"})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := agentapi.New(agentapi.Config{
		Manager:     mgr,
		Attestors:   []agentapi.Attestor{unix.New(unix.Config{})},
		TrustDomain: benchTD,
		Log:         log,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	switch mode := os.Getenv(agentModeEnv); mode {
	case agentAfter:
		if err := agentapi.Serve(ctx, agentapi.ServeConfig{SocketPath: sock}, h); err != nil {
			t.Fatal(err)
		}
	case agentBefore:
		l, err := agentapi.Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		s, err := agentapi.NewServer(h)
		if err != nil {
			t.Fatal(err)
		}
		go func() { <-ctx.Done(); s.Stop() }()
		_ = s.Serve(l)
	default:
		t.Fatalf("unknown %s %q", agentModeEnv, mode)
	}
}

// agentRun is one agent's figures: at rest, then with the flood held.
type agentRun struct {
	mode               string
	flood, held        int
	fdsRest, fdsFlood  int
	rssRest, rssFlood  int // KiB
	rest, during       []time.Duration
	refusalLines       int
	failedDuringFlood  int
	derivedTotal       int
	defaultPerUID      int
	fetchesPerScenario int
}

// procStarter starts the test binary copy with env, as uid (0: this
// process's), with stdin as its stop signal.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *syncbuf.Buffer
}

func start(t *testing.T, exe string, uid int, args []string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(out), stderr: &syncbuf.Buffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	return p
}

// stop closes stdin and waits (bounded) for the process to end.
func (p *proc) stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// fetches times n new-connection X509-SVID fetches through go-spiffe, as
// root; it returns the latencies of those that succeeded and the number
// that failed (each bounded by 5 s).
func fetches(sock string, n int) ([]time.Duration, int) {
	var ds []time.Duration
	failed := 0
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t0 := time.Now()
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+sock))
		d := time.Since(t0)
		cancel()
		if err != nil || svid.ID.Path() != "/legit" {
			failed++
			continue
		}
		ds = append(ds, d)
	}
	return ds, failed
}

// runAgent starts one agent, measures it at rest, floods it from uid
// nobody with n idle connections and measures it again.
func runAgent(t *testing.T, exe, dir, mode string, n, fetchN int) agentRun {
	t.Helper()
	sock := filepath.Join(dir, mode, "public", "api.sock")
	agent := start(t, exe, 0, []string{"-test.run=^TestAgentProcess$"}, agentSocketEnv+"="+sock, agentModeEnv+"="+mode)
	// Up once a fetch succeeds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, failed := fetches(sock, 1); failed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s agent never served; stderr:\n%s", mode, agent.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	pid := agent.cmd.Process.Pid
	r := agentRun{mode: mode, flood: n, fetchesPerScenario: fetchN}
	// Rest and flood alternate over rounds, so that the machine's drift
	// falls on both; held connections, descriptors and RSS are the first
	// round's (the Go heap keeps what a flood grew, so later rests are not
	// at rest).
	for round := range rounds {
		rest, failed := fetches(sock, fetchN/rounds)
		if failed != 0 {
			t.Fatalf("%s agent: %d fetches failed without a flood", mode, failed)
		}
		r.rest = append(r.rest, rest...)
		fds, err := FDs(pid)
		if err != nil {
			t.Fatal(err)
		}
		rss, err := RSSKiB(pid)
		if err != nil {
			t.Fatal(err)
		}
		fl := start(t, exe, nobody, []string{"-test.run=^$"}, flooderEnv+"="+strconv.Itoa(n), agentSocketEnv+"="+sock)
		line, err := fl.stdout.ReadString('\n')
		if err != nil {
			t.Fatalf("flooder: %v; stderr:\n%s", err, fl.stderr.String())
		}
		var held, refused int
		if _, err := fmt.Sscanf(line, "HELD %d REFUSED %d", &held, &refused); err != nil {
			t.Fatalf("flooder said %q: %v", line, err)
		}
		fdsFlood, err := FDs(pid)
		if err != nil {
			t.Fatal(err)
		}
		rssFlood, err := RSSKiB(pid)
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			r.held, r.fdsRest, r.rssRest, r.fdsFlood, r.rssFlood = held, fds, rss, fdsFlood, rssFlood
		}
		// The legitimate caller, while the flood is held.
		during, failed := fetches(sock, fetchN/rounds)
		r.during = append(r.during, during...)
		r.failedDuringFlood += failed
		fl.stop()
		// The flood is over: the agent gives its descriptors back.
		deadline := time.Now().Add(20 * time.Second)
		for {
			now, err := FDs(pid)
			if err != nil {
				t.Fatal(err)
			}
			if now <= fds+4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s agent: %d descriptors 20 s after the flood ended, %d before it", mode, now, fds)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	agent.stop()
	r.refusalLines = strings.Count(agent.stderr.String(), "Refused connection")
	return r
}

// TestAgentFlood floods the Workload API from uid nobody with idle
// connections, against the agent as it was (no caps) and as it is (default
// caps), and times root's fetches at rest and during the flood. Tiny, it
// checks that the caps hold and root is served; BENCH_REPORT=1 writes
// bench/RESULTS-flood-agent.md.
func TestAgentFlood(t *testing.T) {
	if os.Getenv(agentSocketEnv) != "" {
		t.Skip("inside a child process")
	}
	simtest.RequireRoot(t)
	lim := agentapi.Limits{}.Effective()
	// Tiny: just over the per-uid cap, so the cap is seen to bite.
	n := size(lim.MaxConnectionsPerUID+64, 8000)
	fetchN := size(2*rounds, 1000)
	dir, err := os.MkdirTemp("", "flood-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := wltest.CopyForOthers(t, dir)

	var runs []agentRun
	for _, mode := range []string{agentBefore, agentAfter} {
		r := runAgent(t, exe, dir, mode, n, fetchN)
		r.derivedTotal, r.defaultPerUID = lim.MaxConnections, lim.MaxConnectionsPerUID
		t.Logf("%s: flood %d held %d; fds %d -> %d; RSS %d -> %d KiB; p99 %v -> %v; failed during flood %d; refusal lines %d",
			mode, r.flood, r.held, r.fdsRest, r.fdsFlood, r.rssRest, r.rssFlood,
			Quantile(r.rest, 0.99), Quantile(r.during, 0.99), r.failedDuringFlood, r.refusalLines)
		runs = append(runs, r)
	}
	before, after := runs[0], runs[1]
	if before.held != n {
		t.Errorf("the agent without caps held %d of %d idle connections (the baseline must show the defect)", before.held, n)
	}
	if after.held != lim.MaxConnectionsPerUID {
		t.Errorf("the agent with default caps held %d connections of one uid, want its cap %d", after.held, lim.MaxConnectionsPerUID)
	}
	if after.failedDuringFlood != 0 {
		t.Errorf("%d of root's %d fetches failed during the flood", after.failedDuringFlood, fetchN)
	}
	if after.refusalLines < 1 {
		t.Error("the cap bit and nothing was logged")
	}
	if after.fdsFlood-after.fdsRest > 2*lim.MaxConnectionsPerUID+16 {
		t.Errorf("descriptors grew by %d under a flood held to %d connections", after.fdsFlood-after.fdsRest, lim.MaxConnectionsPerUID)
	}
	if fullSize && !t.Failed() {
		if err := writeAgentReport(before, after); err != nil {
			t.Fatal(err)
		}
	}
}
