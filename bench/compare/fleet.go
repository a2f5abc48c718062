package compare

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/fleet"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

// FleetTarget is the bar for a sustained fleet: p99 sync latency.
const FleetTarget = 100 * time.Millisecond

// FleetStep is one fleet size held against a server.
type FleetStep struct {
	Agents   int
	Syncs    int
	Failed   int
	P50, P99 time.Duration
	// CPU is the server's CPU use during the window, in cores.
	CPU float64
	// SimCPU is the harness's (the simulated fleet's) CPU use during the
	// window, in cores: near the CPUs it has, the simulator and not the
	// server limits the size.
	SimCPU float64
	// RSS is the server's resident memory at the end of the window, and
	// RSSAvg its mean over the window's once-a-second reads: less at the
	// mercy of where the server's garbage collection happened to be.
	RSS, RSSAvg int64
	// Subscribed is the number of agents whose notice stream was open
	// at the end of the window; Notices and NoticeSyncs count the change
	// notices the fleet received in it and the syncs they started, and
	// Reopened the streams opened in it (all zero with push off).
	Subscribed, Notices, NoticeSyncs, Reopened int64
	// Propagation is the time, after the window, from the creation of
	// one entry for one agent (BatchCreateEntry called) until that agent
	// held its SVID, with the fleet still syncing: a notice's worth with
	// push on, up to a poll interval with it off.
	Propagation time.Duration
}

// Sustained reports whether the step met FleetTarget with no failed syncs.
func (s FleetStep) Sustained() bool { return s.Failed == 0 && s.Syncs > 0 && s.P99 < FleetTarget }

// fleet (scenario 5) grows a simulated fleet (sim/fleet) step by step
// against one server, each agent with its own entries, and measures sync
// latency and server CPU and memory at each size until p99 passes
// FleetTarget. With im.FleetPush every agent holds a notice stream too.
func (s *scenarioRun) fleet(ctx context.Context, im Impl, _ int) error {
	sz := s.h.Sizes
	// Equal CPU: the server gets one CPU of its own and the simulator
	// the rest, the same for both implementations.
	split, err := splitCPUs(1)
	if err != nil {
		return err
	}
	if split != nil {
		if err := split.pinHarness(); err != nil {
			return err
		}
		defer split.restore()
		s.r.FleetCPUs = fmt.Sprintf("server on CPU %s alone, simulator on CPU %s", cpuList(&split.server), cpuList(&split.harness))
	}
	srv, err := startServerOn(ctx, s.g, s.root, im, split)
	if err != nil {
		return err
	}
	defer srv.close()
	var opts []fleet.Option
	if im.FleetPush {
		opts = append(opts, fleet.WithPush())
	}
	f := fleet.New(fleet.Server{Addr: srv.addr, Bundle: srv.bundle}, sz.FleetInterval, opts...)
	defer f.Close()
	// The simulated agents share the machine with the server under test:
	// collecting their garbage less often leaves it more CPU, for both
	// implementations alike.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	var agents []spiffeid.ID
	for _, n := range sz.FleetSteps {
		added, err := s.growFleet(ctx, srv, f, n)
		if err != nil {
			return err
		}
		agents = append(agents, added...)
		want := n * sz.FleetEntries
		err = poll(ctx, 10*time.Minute, 200*time.Millisecond, "fleet SVIDs", func() error {
			held := f.Held()
			s.h.bar(fmt.Sprintf("%d agents: SVIDs held", n), held, want)
			if held < want {
				return fmt.Errorf("compare: fleet holds %d of %d SVIDs", held, want)
			}
			// With push on, the window is of an idle fleet with every
			// stream open.
			if open := f.PushStats().Open; im.FleetPush && open < int64(n) {
				return fmt.Errorf("compare: %d of %d notice streams open", open, n)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// A collection of the simulator's heap takes about a second on
		// its CPU and stretches every sync in flight; run it now, so
		// that the window (far shorter than the time the simulator
		// takes to fill its heap again) measures the server, not when
		// the harness happened to collect.
		runtime.GC()
		// Measure steady state only: drop the syncs that signed.
		f.Collect()
		cpu0, err := cpuTicks(srv.proc.Pid())
		if err != nil {
			return err
		}
		sim0, err := cpuTicks(os.Getpid())
		if err != nil {
			return err
		}
		stopProfile, err := profileSim(im.Name, n)
		if err != nil {
			return err
		}
		defer stopProfile() // on an early return; a no-op once stopped
		push0 := f.PushStats()
		var rssSum, rssReads int64
		start := time.Now()
		for el := time.Duration(0); el < sz.FleetWindow; el = time.Since(start) {
			s.h.bar(fmt.Sprintf("%d agents: measuring", n), int(el/time.Second), int(sz.FleetWindow/time.Second))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(time.Second, sz.FleetWindow-el)):
			}
			cur, _, err := rss(srv.proc.Pid())
			if err != nil {
				return err
			}
			rssSum, rssReads = rssSum+cur, rssReads+1
		}
		lat, failed, lastErr := f.Collect()
		wall := time.Since(start)
		push1 := f.PushStats()
		stopProfile()
		cpu1, err := cpuTicks(srv.proc.Pid())
		if err != nil {
			return err
		}
		sim1, err := cpuTicks(os.Getpid())
		if err != nil {
			return err
		}
		st := FleetStep{Agents: n, Syncs: len(lat), Failed: failed,
			CPU:    float64(cpu1-cpu0) / clockTicks / wall.Seconds(),
			SimCPU: float64(sim1-sim0) / clockTicks / wall.Seconds()}
		d := Dist{Samples: lat}
		st.P50, st.P99 = d.Quantile(0.5), d.Quantile(0.99)
		if st.RSS, _, err = rss(srv.proc.Pid()); err != nil {
			return err
		}
		st.RSSAvg = rssSum / max(1, rssReads)
		// Taken once the window's figures are read, so that the
		// profiles cost the window nothing.
		if err := profileServer(ctx, im.Name, n); err != nil {
			return err
		}
		st.Subscribed, st.Notices = push1.Open, push1.Notices-push0.Notices
		st.NoticeSyncs, st.Reopened = push1.NoticeSyncs-push0.NoticeSyncs, push1.Opened-push0.Opened
		// After the window, so that it measured an idle fleet: the
		// entry's wave wakes every subscriber.
		probeProfile := profileServerCPU(ctx, im.Name, n, "probe", 3*time.Second)
		st.Propagation, err = s.propagate(ctx, srv, f, agents[len(agents)-1], n)
		if perr := probeProfile(); err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
		if s.r.Fleet == nil {
			s.r.Fleet = map[string][]FleetStep{}
		}
		s.r.Fleet[im.Name] = append(s.r.Fleet[im.Name], st)
		if failed > 0 && lastErr != nil {
			s.h.status(fmt.Sprintf("%d agents: %d syncs failed, last: %v", n, failed, lastErr))
		}
		// Past the capacity the sweep stops, except that the sizes the
		// issue reports (up to FleetAlways) are measured anyway.
		if !st.Sustained() && n >= sz.FleetAlways {
			break
		}
	}
	return nil
}

// profileSim profiles the harness process (the simulated fleet) over a
// measuring window when BENCH_SIM_PROFILE names a directory, so that the
// simulator's own cost can be told from the server's; it returns the
// function that stops the profile.
func profileSim(impl string, n int) (func(), error) {
	dir := os.Getenv("BENCH_SIM_PROFILE")
	if dir == "" {
		return func() {}, nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("sim-%s-%d.prof", strings.ReplaceAll(impl, " ", "_"), n)))
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("compare: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}, nil
}

// propagate creates one more entry for agent, which the fleet of n
// holds, and returns how long from the call until the agent held its
// SVID.
func (s *scenarioRun) propagate(ctx context.Context, srv *server, f *fleet.Fleet, agent spiffeid.ID, n int) (time.Duration, error) {
	entry := &types.Entry{
		ParentId:  &types.SPIFFEID{TrustDomain: agent.TrustDomain().Name(), Path: agent.Path()},
		SpiffeId:  &types.SPIFFEID{TrustDomain: trustDomain.Name(), Path: fmt.Sprintf("/fleet-probe/%d", n)},
		Selectors: []*types.Selector{workloadSelector()},
	}
	s.h.bar(fmt.Sprintf("%d agents: one more entry", n), 0, 1)
	start := time.Now()
	resp, err := entryv1.NewEntryClient(srv.admin).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{entry}})
	if err != nil {
		return 0, fmt.Errorf("compare: probe entry: %w", err)
	}
	r := resp.Results[0]
	if c := codes.Code(r.Status.GetCode()); c != codes.OK {
		return 0, fmt.Errorf("compare: probe entry: %s: %s", c, r.Status.GetMessage())
	}
	// A few milliseconds between looks: the fleet has the harness's CPU
	// to itself, and the figure is a notice's worth or a poll's.
	err = poll(ctx, 2*s.h.Sizes.FleetInterval+time.Minute, 2*time.Millisecond, "probe entry's SVID", func() error {
		if !f.Holds(agent, r.Entry.Id) {
			return fmt.Errorf("compare: %s holds no SVID for the probe entry", agent)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	s.h.bar(fmt.Sprintf("%d agents: one more entry", n), 1, 1)
	return d, nil
}

// profileServer saves the heap and goroutine profiles of the server under
// test when BENCH_SERVER_PROFILE names a directory and BENCH_SERVER_PPROF
// the server's profiling port: what each fleet size holds, by stack.
func profileServer(ctx context.Context, impl string, n int) error {
	// heap?debug=1 ends with the runtime's MemStats: stacks and heap
	// spans beside the sampled live heap.
	for _, p := range [][2]string{{"heap", "heap"}, {"heap?debug=1", "memstats.txt"}, {"goroutine", "goroutine"}} {
		if err := saveServerProfile(ctx, impl, n, p[0], p[1]); err != nil {
			return err
		}
	}
	return nil
}

// profileServerCPU starts a CPU profile of the server for d, under the
// same settings as profileServer, and returns the function that waits for
// it: what the server spends on what follows (one entry's wave).
func profileServerCPU(ctx context.Context, impl string, n int, what string, d time.Duration) func() error {
	if os.Getenv("BENCH_SERVER_PROFILE") == "" || os.Getenv("BENCH_SERVER_PPROF") == "" {
		return func() error { return nil }
	}
	errc := make(chan error, 1)
	go func() {
		errc <- saveServerProfile(ctx, impl, n, fmt.Sprintf("profile?seconds=%d", int(d/time.Second)), what+".cpu")
	}()
	// The profile has begun once its request is in.
	time.Sleep(200 * time.Millisecond)
	return func() error { return <-errc }
}

// saveServerProfile fetches one pprof endpoint of the server into
// BENCH_SERVER_PROFILE; a no-op unless both settings are there.
func saveServerProfile(ctx context.Context, impl string, n int, endpoint, suffix string) error {
	dir, port := os.Getenv("BENCH_SERVER_PROFILE"), os.Getenv("BENCH_SERVER_PPROF")
	if dir == "" || port == "" {
		return nil
	}
	name := filepath.Join(dir, fmt.Sprintf("server-%s-%d.%s", strings.ReplaceAll(impl, " ", "_"), n, suffix))
	return fetchProfile(ctx, port, endpoint, name)
}

// fetchProfile saves what the pprof endpoint (heap, profile?seconds=3, ...)
// on 127.0.0.1:port answers to the file name.
func fetchProfile(ctx context.Context, port, endpoint, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%s/debug/pprof/%s", port, endpoint), nil)
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("compare: profile %s: %w", endpoint, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("compare: profile %s: %s: %v", endpoint, resp.Status, err)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	return nil
}

// growFleet attests agents until the fleet has n, a few at a time as a
// fleet rolling out would, and registers each one's entries; it returns
// the agents it added.
func (s *scenarioRun) growFleet(ctx context.Context, srv *server, f *fleet.Fleet, n int) ([]spiffeid.ID, error) {
	add := n - f.Len()
	if add <= 0 {
		return nil, nil
	}
	var (
		mu    sync.Mutex
		added []spiffeid.ID
		first error
		wg    sync.WaitGroup
	)
	work := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				token, err := srv.token(ctx)
				if err == nil {
					var id spiffeid.ID
					id, err = f.Add(ctx, token)
					if err == nil {
						mu.Lock()
						added = append(added, id)
						s.h.bar(fmt.Sprintf("%d agents: attesting", n), f.Len(), n)
						mu.Unlock()
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for range add {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	var es []*types.Entry
	for _, id := range added {
		parent := &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
		for j := range s.h.Sizes.FleetEntries {
			es = append(es, &types.Entry{
				ParentId:  parent,
				SpiffeId:  &types.SPIFFEID{TrustDomain: trustDomain.Name(), Path: fmt.Sprintf("/fleet%s/%d", strings.TrimPrefix(parent.Path, "/spire/agent/join_token"), j)},
				Selectors: []*types.Selector{workloadSelector()},
			})
		}
	}
	client := entryv1.NewEntryClient(srv.admin)
	for i := 0; i < len(es); i += 500 {
		resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: es[i:min(len(es), i+500)]})
		if err != nil {
			return nil, fmt.Errorf("compare: fleet entries: %w", err)
		}
		for _, r := range resp.Results {
			if c := codes.Code(r.Status.GetCode()); c != codes.OK {
				return nil, fmt.Errorf("compare: fleet entry: %s: %s", c, r.Status.GetMessage())
			}
		}
		s.h.bar(fmt.Sprintf("%d agents: entries", n), min(len(es), i+500), len(es))
	}
	return added, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// cpuTicks reads a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("compare: %w", err)
	}
	// The command name may hold spaces; fields start after its ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("compare: short /proc/%d/stat", pid)
	}
	var utime, stime int64
	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		return 0, fmt.Errorf("compare: utime: %w", err)
	}
	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		return 0, fmt.Errorf("compare: stime: %w", err)
	}
	return utime + stime, nil
}
