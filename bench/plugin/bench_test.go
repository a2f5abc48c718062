package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	agentapi "github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/external"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// fullSize is set by BENCH_REPORT=1: the tests then run at the sizes the
// report quotes and write the results file; otherwise they run small
// enough for every `go test` and only check their invariants.
var fullSize = os.Getenv("BENCH_REPORT") == "1"

// size returns full under BENCH_REPORT=1, else tiny.
func size(tiny, full int) int {
	if fullSize {
		return full
	}
	return tiny
}

// extName is the external attestor's name in the agent's configuration,
// and so the type of its selectors.
const extName = "ext"

// attestor is the agent's workload attestor interface.
type attestor interface {
	Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error)
}

// loadExternal builds the test WorkloadAttestor plugin, loads it through the
// plugin host and returns it with its adapter; the plugin is closed when t
// ends.
func loadExternal(t testing.TB) (*plugin.Plugin, *external.Attestor) {
	t.Helper()
	return loadExternalWith(t, "")
}

// loadExternalWith loads the plugin with plugin_data (HCL text).
func loadExternalWith(t testing.TB, data string) (*plugin.Plugin, *external.Attestor) {
	t.Helper()
	p, err := plugin.Load(context.Background(), plugin.Config{
		Data:        data,
		Type:        "WorkloadAttestor",
		Name:        extName,
		Cmd:         pluginbuild.Build(t, "workloadattestor"),
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Service:     "spire.plugin.agent.workloadattestor.v1.WorkloadAttestor",
		Log:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, external.New(p.Conn(), extName)
}

// selfPIDFD is a pidfd of this process, the caller every attestor is
// asked about here.
func selfPIDFD(t testing.TB) int {
	t.Helper()
	fd, err := sysunix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	return fd
}

// pair runs both attestors as the Workload API handler does: a in its own
// goroutine, b on the caller's, the call done when the slower one is.
// With eachInGoroutine, b gets a goroutine too, as the handler did before.
type pair struct {
	a, b            attestor
	eachInGoroutine bool
}

func (p pair) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	var (
		wg         sync.WaitGroup
		sa, sb     []*types.Selector
		errA, errB error
	)
	wg.Go(func() { sa, errA = p.a.Attest(ctx, pid, pidfd) })
	if p.eachInGoroutine {
		wg.Go(func() { sb, errB = p.b.Attest(ctx, pid, pidfd) })
	} else {
		sb, errB = p.b.Attest(ctx, pid, pidfd)
	}
	wg.Wait()
	if errA != nil {
		return nil, errA
	}
	if errB != nil {
		return nil, errB
	}
	return append(sa, sb...), nil
}

// sequence runs its attestors one after the other on the caller's
// goroutine.
type sequence []attestor

func (q sequence) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	var out []*types.Selector
	for _, a := range q {
		s, err := a.Attest(ctx, pid, pidfd)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// mode is one way of making a call, measured against the others.
type mode struct {
	name string
	call func() error
}

// alternate runs rounds of n calls of every mode, one mode after another,
// the order reversed every other round so that a drift of this shared
// machine falls on every mode alike. It returns each mode's durations, by
// round. Every round starts each mode from a clean heap, so that no mode
// pays for the garbage of the one before.
func alternate(t *testing.T, rounds, n int, modes []mode) [][][]time.Duration {
	t.Helper()
	for _, m := range modes { // warm-up: connections, caches, the plugin's heap
		for range 50 {
			if err := m.call(); err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
		}
	}
	out := make([][][]time.Duration, len(modes))
	for r := range rounds {
		order := make([]int, len(modes))
		for i := range order {
			order[i] = i
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			runtime.GC()
			d := make([]time.Duration, n)
			for j := range d {
				s := time.Now()
				if err := modes[i].call(); err != nil {
					t.Fatalf("%s: %v", modes[i].name, err)
				}
				d[j] = time.Since(s)
			}
			out[i] = append(out[i], d)
		}
	}
	return out
}

// percentiles returns the p50 and p99 of d (sorting d).
func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

// stats is one mode's figures over all rounds.
type stats struct {
	p50, p99 time.Duration
	// roundP99 is the p99 of each round, in round order.
	roundP99 []time.Duration
}

func summarize(byRound [][]time.Duration) stats {
	var s stats
	var all []time.Duration
	for _, d := range byRound {
		all = append(all, d...)
		_, p99 := percentiles(slices.Clone(d))
		s.roundP99 = append(s.roundP99, p99)
	}
	s.p50, s.p99 = percentiles(all)
	return s
}

// added compares with against base, round by round: the median over rounds
// of the p50 difference and of the p99 difference, and the sorted p99
// differences. A burst of interruptions moves one round, not the median.
func added(base, with [][]time.Duration) (p50, p99 time.Duration, each []time.Duration) {
	var d50 []time.Duration
	for r := range base {
		b50, b99 := percentiles(slices.Clone(base[r]))
		w50, w99 := percentiles(slices.Clone(with[r]))
		d50 = append(d50, w50-b50)
		each = append(each, w99-b99)
	}
	slices.Sort(d50)
	slices.Sort(each)
	return d50[len(d50)/2], each[len(each)/2], each
}

// server serves the Workload API on a new Unix socket with the given
// attestors and one identity, /workload, whose entry asks for sels, and
// returns a client connection to it over that socket.
func server(t *testing.T, ca *workloadapitest.CA, attestors []agentapi.Attestor, sels ...*types.Selector) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	m := workloadapitest.NewManager(t, ca)
	m.Set(ca.Issue(t, "/workload"), sels...)
	h := agentapi.New(agentapi.Config{Manager: m, Attestors: attestors, TrustDomain: ca.TD,
		Log: slog.New(slog.DiscardHandler)})
	// Not t.TempDir: its path can pass the 108 bytes a socket path may have.
	dir, err := os.MkdirTemp("", "plugin-bench")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	l, err := agentapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := agentapi.NewServer(h)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// wantID is the SPIFFE ID of the one identity every server holds.
const wantID = "spiffe://example.org/workload"

// apiCall is one Workload API call that attests its caller once: it opens
// the call on c, takes the first answer and checks it.
type apiCall struct {
	name string
	do   func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error
}

// firstMessage opens a stream, takes its first message and ends the stream,
// as a one-shot client (go-spiffe's FetchX509SVID) does.
func firstMessage[R any](ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[R], error), check func(*R) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := open(ctx)
	if err != nil {
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	return check(resp)
}

// apiCalls are the calls that attest once per call (the streams attest when
// they open, FetchJWTSVID on each request); the benchmark measures the
// cheapest of them, where the attestors' share is largest, and
// FetchX509SVID, the call workloads make.
var apiCalls = []apiCall{
	{"FetchX509SVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		return firstMessage(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[workload.X509SVIDResponse], error) {
			return c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		}, func(r *workload.X509SVIDResponse) error {
			if len(r.Svids) != 1 || r.Svids[0].SpiffeId != wantID {
				return fmt.Errorf("FetchX509SVID: got %d SVIDs, want %s", len(r.Svids), wantID)
			}
			return nil
		})
	}},
	{"FetchX509Bundles", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		return firstMessage(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[workload.X509BundlesResponse], error) {
			return c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
		}, func(r *workload.X509BundlesResponse) error {
			if len(r.Bundles["spiffe://example.org"]) == 0 {
				return fmt.Errorf("FetchX509Bundles: no bundle for example.org")
			}
			return nil
		})
	}},
	{"FetchJWTBundles", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		return firstMessage(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[workload.JWTBundlesResponse], error) {
			return c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
		}, func(r *workload.JWTBundlesResponse) error {
			if len(r.Bundles["spiffe://example.org"]) == 0 {
				return fmt.Errorf("FetchJWTBundles: no bundle for example.org")
			}
			return nil
		})
	}},
	{"FetchJWTSVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
		r, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"bench"}})
		if err != nil {
			return err
		}
		if len(r.Svids) != 1 || r.Svids[0].SpiffeId != wantID {
			return fmt.Errorf("FetchJWTSVID: got %d SVIDs, want %s", len(r.Svids), wantID)
		}
		return nil
	}},
}

// TestWorkloadAPI measures Workload API calls end to end, from a gRPC
// client over the agent's real Unix socket to the real handler (peer
// credentials, pidfd, attestors, cache view, response), with
// attestors=[unix] and attestors=[unix, external]. The external server's
// entry asks for a selector only the plugin produces, so every call that
// succeeds there went through the plugin.
func TestWorkloadAPI(t *testing.T) {
	_, ext := loadExternal(t)
	uni := unix.New(unix.Config{})
	ca := workloadapitest.NewCA(t, spiffeid.RequireTrustDomainFromString("example.org"))
	uid := &types.Selector{Type: unix.SelectorType, Value: "uid:" + strconv.Itoa(os.Getuid())}
	label := &types.Selector{Type: extName, Value: "label:ext"}
	base := server(t, ca, []agentapi.Attestor{uni}, uid)
	with := server(t, ca, []agentapi.Attestor{uni, ext}, uid, label)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true")

	// Which call is cheapest: each with attestors=[unix], alternating.
	var probe []mode
	for _, c := range apiCalls {
		probe = append(probe, mode{c.name, func() error { return c.do(ctx, base) }})
	}
	probed := alternate(t, size(1, 5), size(20, 400), probe)
	cheapest, costs := 0, make([]time.Duration, len(apiCalls))
	for i := range apiCalls {
		costs[i] = summarize(probed[i]).p50
		if costs[i] < costs[cheapest] {
			cheapest = i
		}
	}
	results.probe = probeTable(costs)

	// The plugin's selector is what lets the external server answer; the
	// unix-only server must refuse a caller that lacks it.
	refused := server(t, ca, []agentapi.Attestor{uni}, uid, label)
	if err := apiCalls[0].do(ctx, refused); err == nil {
		t.Fatal("FetchX509SVID answered without the plugin's selector")
	}

	calls := []apiCall{apiCalls[0]}
	if cheapest != 0 {
		calls = append(calls, apiCalls[cheapest])
	}
	var modes []mode
	for _, c := range calls {
		modes = append(modes,
			mode{c.name + ", attestors=[unix]", func() error { return c.do(ctx, base) }},
			mode{c.name + ", attestors=[unix, external]", func() error { return c.do(ctx, with) }})
	}
	rounds, n := size(2, 10), size(20, 2000)
	d := alternate(t, rounds, n, modes)
	var rows []row
	for i, c := range calls {
		b, w := d[2*i], d[2*i+1]
		a50, a99, each := added(b, w)
		rows = append(rows, row{what: c.name, base: summarize(b), with: summarize(w), add50: a50, add99: a99, each: each})
	}
	results.api = rows
	results.apiRounds, results.apiCalls = rounds, n
	t.Log("\n" + table("Workload API call", "attestors=[unix]", "attestors=[unix, external]", rows, rounds, n))
}

// TestAttest measures the bare Attest call of each attestor, on this
// process through its pidfd: the unix attestor, the external one (host
// adapter, gRPC over go-plugin's socket, the plugin's own /proc read and
// the adapter's two pidfd checks) and the two as the handler runs them,
// in parallel. A gRPC health check on the plugin's connection (go-plugin's
// plugin process answers it itself) is the floor of any round trip to the
// plugin: the same transport with no attestation work on either side.
func TestAttest(t *testing.T) {
	p, ext := loadExternal(t)
	// The same plugin writing a debug line per call: each line crosses
	// to the host as hclog JSON on stderr and is parsed there.
	_, logging := loadExternalWith(t, "log_calls = true")
	health := healthpb.NewHealthClient(p.Conn())
	echo, unary := floors(t)
	uni := unix.New(unix.Config{})
	fd := selfPIDFD(t)
	pid := int32(os.Getpid())
	ctx := context.Background()
	check := func(a attestor, want ...string) func() error {
		return func() error {
			sels, err := a.Attest(ctx, pid, fd)
			if err != nil {
				return err
			}
			for _, typ := range want {
				if !slices.ContainsFunc(sels, func(s *types.Selector) bool { return s.Type == typ }) {
					return fmt.Errorf("no %s selector in %v", typ, sels)
				}
			}
			return nil
		}
	}
	const (
		mUnix = iota
		mExternal
		mPair
		mPairBefore
		mSequential
		mLogging
		mEcho
		mUnary
		mHealth
	)
	modes := []mode{
		mUnix:       {"unix", check(uni, unix.SelectorType)},
		mExternal:   {"external", check(ext, extName)},
		mPair:       {"unix + external, in parallel", check(pair{a: uni, b: ext}, unix.SelectorType, extName)},
		mPairBefore: {"unix + external, each in a goroutine (the handler before)", check(pair{a: uni, b: ext, eachInGoroutine: true}, unix.SelectorType, extName)},
		mSequential: {"unix then external, both on the caller's goroutine", check(sequence{uni, ext}, unix.SelectorType, extName)},
		mLogging:    {"external, logging each call", check(logging, extName)},
		mEcho:       {"platform: one-byte echo to another process", echo},
		mUnary:      {"platform: plain gRPC unary to another process", unary},
		mHealth: {"health check on the plugin's connection", func() error {
			r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "plugin"})
			if err != nil {
				return err
			}
			if r.Status != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("plugin health: %s", r.Status)
			}
			return nil
		}},
	}
	rounds, n := size(2, 10), size(20, 2000)
	d := alternate(t, rounds, n, modes)
	vs := func(what string, base, with int) row {
		a50, a99, each := added(d[base], d[with])
		return row{what: what, base: summarize(d[base]), with: summarize(d[with]), add50: a50, add99: a99, each: each}
	}
	results.attest = []row{
		vs("unix Attest vs a one-byte echo to another process (platform floor, no gRPC)", mUnix, mEcho),
		vs("unix Attest vs a plain gRPC unary to another process (platform floor for any gRPC plugin)", mUnix, mUnary),
		vs("unix Attest vs a health check on the plugin's connection (transport floor)", mUnix, mHealth),
		vs("unix Attest vs external Attest", mUnix, mExternal),
		vs("unix Attest vs [unix, external] as the handler runs them (external on the caller's goroutine)", mUnix, mPair),
		vs("[unix, external] each in a goroutine, as the handler did before (baseline) vs as it does now", mPairBefore, mPair),
		vs("[unix, external] as the handler runs them (baseline) vs one after the other on the caller's goroutine", mPair, mSequential),
		vs("external Attest vs the same plugin logging each call (baseline: external)", mExternal, mLogging),
	}
	results.attestRounds, results.attestCalls = rounds, n
	t.Log("\n" + table("bare Attest", "baseline (unix)", "with external", results.attest, rounds, n))
}

// TestProfile runs the external attestor's Attest alone, under a CPU
// profile of this process, and reads the CPU time both processes spent,
// so the report can say where a round trip's time goes: the host's side
// (adapter, gRPC, socket) and the plugin's (its gRPC server and /proc
// read).
func TestProfile(t *testing.T) {
	p, ext := loadExternal(t)
	fd := selfPIDFD(t)
	pid := int32(os.Getpid())
	ctx := context.Background()
	n := size(200, 30000)
	for range 50 {
		if _, err := ext.Attest(ctx, pid, fd); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	prof, err := startProfile(t)
	if err != nil {
		t.Fatal(err)
	}
	hostCPU0, err := selfCPU()
	if err != nil {
		t.Fatal(err)
	}
	plugCPU0, err := processCPU(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range n {
		if _, err := ext.Attest(ctx, pid, fd); err != nil {
			t.Fatal(err)
		}
	}
	wall := time.Since(start)
	hostCPU1, err := selfCPU()
	if err != nil {
		t.Fatal(err)
	}
	plugCPU1, err := processCPU(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	top, err := prof.stop()
	if err != nil {
		t.Fatal(err)
	}
	per := func(d time.Duration) time.Duration { return d / time.Duration(n) }
	results.profile = &profile{calls: n, wall: per(wall), host: per(hostCPU1 - hostCPU0), plugin: per(plugCPU1 - plugCPU0), top: top}
	t.Logf("per call: wall %s, host CPU %s, plugin CPU %s\n%s", per(wall), per(hostCPU1-hostCPU0), per(plugCPU1-plugCPU0), top)
	if plugCPU1 < plugCPU0 || hostCPU1 <= hostCPU0 {
		t.Errorf("CPU time went backwards: host %s -> %s, plugin %s -> %s", hostCPU0, hostCPU1, plugCPU0, plugCPU1)
	}
}
