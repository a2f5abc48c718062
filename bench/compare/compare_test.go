package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

var (
	oursOnce sync.Once
	oursImpl Impl
	oursErr  error
)

// ours returns our binaries: BENCH_OURS_BIN (set by `make bench-peer`
// after `make build`), or a fresh build so that a plain `go test` never
// measures stale binaries.
func ours(t *testing.T) Impl {
	t.Helper()
	oursOnce.Do(func() {
		dir := os.Getenv("BENCH_OURS_BIN")
		if dir == "" {
			if dir, oursErr = os.MkdirTemp("", "cmp-bin"); oursErr != nil {
				return
			}
			cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/spire-server", "../../cmd/spire-agent")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				oursErr = err
				t.Logf("build: %s", out.String())
				return
			}
		}
		oursImpl = Impl{Name: "ours", Dir: dir}
		oursErr = oursImpl.Check()
	})
	if oursErr != nil {
		t.Fatal(oursErr)
	}
	return oursImpl
}

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv("BENCH_OURS_BIN") == "" && oursImpl.Dir != "" {
		os.RemoveAll(oursImpl.Dir)
	}
	os.Exit(code)
}

// TestPeer runs every scenario. With BENCH_PEER_BIN (upstream SPIRE's
// binaries, from bench/peer) and BENCH_REPORT=1 it is the full comparison
// and writes ../RESULTS-peer.md and ../peer-latency.svg; otherwise it runs
// at tiny sizes, against our binaries alone unless BENCH_PEER_BIN is set,
// and writes nothing.
func TestPeer(t *testing.T) {
	h := &Harness{Ours: ours(t), Lineage: true, Sizes: TinySizes()}
	peerDir := os.Getenv("BENCH_PEER_BIN")
	if peerDir != "" {
		h.Peer = &Impl{Name: "spire-" + filepath.Base(peerDir), Dir: peerDir}
	}
	report := peerDir != "" && os.Getenv("BENCH_REPORT") == "1"
	var progress bytes.Buffer
	h.Progress = &progress
	if report {
		h.Sizes = FullSizes()
		h.Progress = os.Stderr
	}
	// Exploring one scenario: BENCH_SCENARIOS=5 BENCH_FLEET_STEPS=1000,5000
	// runs just the fleet at those sizes and writes no report (a partial
	// run must not replace the published one).
	if only := os.Getenv("BENCH_SCENARIOS"); only != "" {
		h.Only = strings.Split(only, ",")
		h.Sizes = FullSizes()
		h.Progress = os.Stderr
		report = false
	}
	if steps := os.Getenv("BENCH_FLEET_STEPS"); steps != "" {
		h.Sizes.FleetSteps = nil
		for _, f := range strings.Split(steps, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				t.Fatalf("BENCH_FLEET_STEPS: bad size %q", f)
			}
			h.Sizes.FleetSteps = append(h.Sizes.FleetSteps, n)
		}
	}
	// BENCH_FLEET_PUSH=1 runs the fleet for ours twice, polling and with
	// change notices, at every size of the sweep (an A/B needs both at
	// each); tiny runs always do, so that `make test` covers the streams.
	switch {
	case os.Getenv("BENCH_FLEET_PUSH") == "1":
		h.FleetPush = true
		h.Sizes.FleetAlways = slices.Max(h.Sizes.FleetSteps)
	case !report && h.Only == nil:
		h.FleetPush = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := h.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !report {
		for _, f := range res.Failures {
			t.Error(f)
		}
	}

	md := res.Markdown(ThisMachine(), "peer-latency.svg")
	if h.Only != nil {
		t.Log("\n" + md)
		return
	}
	svg := res.CDFSVG()
	if report {
		// Written before the checks, so that a failed round still leaves
		// the hour's figures (the report lists the failure).
		if err := os.WriteFile("../RESULTS-peer.md", []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../peer-latency.svg", []byte(svg), 0o644); err != nil {
			t.Fatal(err)
		}
		if fs := res.FleetSVG(); fs != "" {
			if err := os.WriteFile("../peer-fleet.svg", []byte(fs), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	pair := []string{"ours"}
	workload := []string{"ours", "ours (lineage)"}
	if h.Peer != nil {
		pair = append(pair, h.Peer.Name)
		workload = append(workload, h.Peer.Name)
	}
	fleets := slices.Clone(pair)
	if h.FleetPush {
		fleets = append(fleets, "ours (push)")
	}
	sz := h.Sizes
	perImpl := perRound(sz.Attestations, sz.Rounds) * sz.Rounds
	for _, impl := range pair {
		if d := res.Attest[impl]; d == nil || len(d.Samples) != perImpl {
			t.Errorf("%s: attestations %v, want %d", impl, d, perImpl)
		}
		if d := res.Propagation[impl]; d == nil || len(d.Samples) != sz.Rounds {
			t.Errorf("%s: propagation %v, want %d rounds", impl, d, sz.Rounds)
		}
		for _, b := range sz.Batches {
			if tp := res.Batch[b][impl]; tp == nil || tp.Items != sz.Rounds*max(1, sz.BatchCSRs/b)*b || tp.PerSecond() <= 0 {
				t.Errorf("%s: batches of %d: %+v", impl, b, tp)
			}
		}
		if c := res.Cache[impl]; c == nil || c.AgentRSS <= 0 || c.AgentPeak < c.AgentRSS || c.AgentSettled <= 0 || c.Entries != sz.CacheEntries {
			t.Errorf("%s: cache result %+v", impl, c)
		}
		// A full cache holds the limit, and the on-demand SVIDs are
		// held (beyond it) while the stream is open.
		if c := res.LRU[impl]; c == nil || c.AgentRSS <= 0 || c.Held != sz.LRULimit || c.OnDemand <= 0 || c.HeldAfter < lruWanted {
			t.Errorf("%s: LRU result %+v", impl, c)
		}
	}
	for _, impl := range fleets {
		// Under a loaded `make test` the sweep may stop early; the first
		// size must still have synced, without failures.
		if st := res.Fleet[impl]; len(st) == 0 || st[0].Agents != sz.FleetSteps[0] {
			t.Errorf("%s: fleet steps %+v", impl, st)
		} else if err := checkFleetStep(st[0], sz, runtime.NumCPU(), strings.HasSuffix(impl, " (push)")); err != nil {
			t.Errorf("%s: fleet step %+v: %v", impl, st[0], err)
		}
	}
	if h.FleetPush && !strings.Contains(md, "### 5b. Fleet with change notices: ours against ours (push)") {
		t.Error("push fleet ran but the report has no comparison of it")
	}
	for _, impl := range workload {
		for _, c := range sz.Concurrency {
			if tp := res.Fetch[c][impl]; tp == nil || len(tp.Calls.Samples) != sz.Rounds*max(c, sz.WorkloadCalls/c*c) {
				t.Errorf("%s: %d callers: %+v", impl, c, tp)
			}
		}
	}
	if runtime.NumCPU() > 1 && !strings.Contains(md, "at equal CPU: server on CPU") {
		t.Error("fleet ran with more than one CPU but does not say how it split them")
	}
	for _, want := range []string{"### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### 7.", "ours (lineage)", "Every size tried"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Count(svg, "<polyline") != len(pair)+len(workload) {
		t.Errorf("plot has %d lines, want %d", strings.Count(svg, "<polyline"), len(pair)+len(workload))
	}
	if fs := res.FleetSVG(); strings.Count(fs, "<polyline") != len(fleets) {
		t.Errorf("fleet plot has %d lines, want %d", strings.Count(fs, "<polyline"), len(fleets))
	}
	if !report {
		if !strings.Contains(progress.String(), "scenario 6 cache · ours · round 1/1") {
			t.Errorf("no progress for scenario 6 in:\n%s", progress.String())
		}
		t.Logf("tiny run, nothing written:\n%s", md)
	}
}

// checkFleetStep checks what a measured fleet step must show at any size:
// syncs counted in the window and none failed, latencies that are real
// durations in order, the server's memory read, and CPU figures in cores
// that are neither negative nor more than the machine has. CPU is read in
// clock ticks (10 ms), so over the tiny run's one-second window a few
// cheap syncs can round to zero: a CPU figure must be above zero only when
// the window is long enough for a tick to be certain (full sizes). A
// fleet with push on had every agent's stream open through the window
// (none ended and was reopened in it); one polling opened none.
func checkFleetStep(st FleetStep, sz Sizes, cpus int, push bool) error {
	switch {
	case st.Syncs <= 0:
		return errors.New("no syncs counted in the window")
	case st.Failed != 0:
		return fmt.Errorf("%d syncs failed", st.Failed)
	case st.P50 <= 0 || st.P99 < st.P50:
		return fmt.Errorf("latencies p50 %v, p99 %v: not measured", st.P50, st.P99)
	case st.RSS <= 0 || st.RSSAvg <= 0:
		return errors.New("server RSS not measured")
	case st.Propagation <= 0:
		return errors.New("the entry after the window was not timed")
	case push && (st.Subscribed != int64(st.Agents) || st.Reopened != 0):
		return fmt.Errorf("%d of %d streams open at the end of the window, %d reopened in it", st.Subscribed, st.Agents, st.Reopened)
	case !push && (st.Subscribed != 0 || st.Notices != 0 || st.NoticeSyncs != 0):
		return fmt.Errorf("polling fleet with %d streams, %d notices", st.Subscribed, st.Notices)
	}
	// A window's CPU divided by its wall time is in cores; the slack
	// covers one tick of rounding and the reads just outside the window.
	maxCores := float64(cpus) + 0.5
	for _, c := range []struct {
		what  string
		cores float64
	}{{"server CPU", st.CPU}, {"simulator CPU", st.SimCPU}} {
		if c.cores < 0 || c.cores > maxCores {
			return fmt.Errorf("%s %.3f cores: outside [0, %.1f]", c.what, c.cores, maxCores)
		}
		if sz.FleetWindow >= 10*time.Second && c.cores == 0 {
			return fmt.Errorf("%s 0 over a %v window", c.what, sz.FleetWindow)
		}
	}
	return nil
}

// TestCheckFleetStep: the fleet check passes a tiny step whose CPU
// rounded to zero, and refuses what a broken measurement would give.
func TestCheckFleetStep(t *testing.T) {
	tiny, full := TinySizes(), FullSizes()
	good := FleetStep{Agents: 2, Syncs: 9, P50: 2 * time.Millisecond, P99: 5 * time.Millisecond, CPU: 0.01, SimCPU: 0, RSS: 30 << 20, RSSAvg: 29 << 20, Propagation: 40 * time.Millisecond}
	if err := checkFleetStep(good, tiny, 2, false); err != nil {
		t.Fatalf("tiny step with a zero simulator CPU refused: %v", err)
	}
	goodPush := good
	goodPush.Subscribed, goodPush.Notices, goodPush.NoticeSyncs = 2, 1, 1
	if err := checkFleetStep(goodPush, tiny, 2, true); err != nil {
		t.Fatalf("push step with every stream open refused: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*FleetStep)
		sz   Sizes
		push bool
	}{
		"no syncs":                  {func(s *FleetStep) { s.Syncs = 0 }, tiny, false},
		"a failed sync":             {func(s *FleetStep) { s.Failed = 1 }, tiny, false},
		"no latency":                {func(s *FleetStep) { s.P50, s.P99 = 0, 0 }, tiny, false},
		"p99 below p50":             {func(s *FleetStep) { s.P99 = time.Millisecond }, tiny, false},
		"no RSS":                    {func(s *FleetStep) { s.RSS = 0 }, tiny, false},
		"no mean RSS":               {func(s *FleetStep) { s.RSSAvg = 0 }, tiny, false},
		"no propagation":            {func(s *FleetStep) { s.Propagation = 0 }, tiny, false},
		"negative CPU":              {func(s *FleetStep) { s.CPU = -0.1 }, tiny, false},
		"ticks, not cores":          {func(s *FleetStep) { s.SimCPU = 37 }, tiny, false},
		"zero CPU, full window":     {func(s *FleetStep) {}, full, false},
		"push, a stream missing":    {func(s *FleetStep) { s.Subscribed = 1 }, tiny, true},
		"push, none open":           {func(s *FleetStep) { s.Subscribed = 0 }, tiny, true},
		"push, a stream reopened":   {func(s *FleetStep) { s.Subscribed, s.Reopened = 2, 1 }, tiny, true},
		"polling, a stream open":    {func(s *FleetStep) { s.Subscribed = 1 }, tiny, false},
		"polling, a notice counted": {func(s *FleetStep) { s.Notices = 1 }, tiny, false},
	} {
		st := good
		if tc.push {
			st = goodPush
		}
		tc.mut(&st)
		if err := checkFleetStep(st, tc.sz, 2, tc.push); err == nil {
			t.Errorf("%s: accepted %+v", name, st)
		}
	}
}

// TestInterruptLeavesNothing cancels a run while its server and agent
// are up (what SIGINT does through signal.NotifyContext) and checks that
// Run returns promptly and no process of ours is left.
func TestInterruptLeavesNothing(t *testing.T) {
	im := ours(t)
	// Only propagation, of more entries than it could create in time.
	sz := Sizes{Rounds: 1, Entries: 1_000_000}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progress syncbuf.Buffer
	h := &Harness{Ours: im, Sizes: sz, Progress: &progress}
	errc := make(chan error, 1)
	go func() { _, err := h.Run(ctx); errc <- err }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(progress.String(), "entries created") {
		if time.Now().After(deadline) {
			t.Fatalf("propagation never started:\n%s", progress.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := countProcs(im.Dir); n != 2 {
		t.Errorf("%d processes of ours running mid-scenario, want a server and an agent", n)
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("interrupted run returned no error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if n := countProcs(im.Dir); n != 0 {
		t.Errorf("%d processes left after an interrupted run", n)
	}
}

// countProcs counts live processes whose executable is in dir.
func countProcs(dir string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && filepath.Dir(exe) == filepath.Clean(dir) {
			n++
		}
	}
	return n
}
