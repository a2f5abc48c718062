package compare

import (
	"context"
	"fmt"
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
	// RSS is the server's resident memory at the end of the window.
	RSS int64
}

// Sustained reports whether the step met FleetTarget with no failed syncs.
func (s FleetStep) Sustained() bool { return s.Failed == 0 && s.Syncs > 0 && s.P99 < FleetTarget }

// fleet (scenario 5) grows a simulated fleet (sim/fleet) step by step
// against one server, each agent with its own entries, and measures sync
// latency and server CPU and memory at each size until p99 passes
// FleetTarget.
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
	f := fleet.New(fleet.Server{Addr: srv.addr, Bundle: srv.bundle}, sz.FleetInterval)
	defer f.Close()
	// The simulated agents share the machine with the server under test:
	// collecting their garbage less often leaves it more CPU, for both
	// implementations alike.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for _, n := range sz.FleetSteps {
		if err := s.growFleet(ctx, srv, f, n); err != nil {
			return err
		}
		want := n * sz.FleetEntries
		err := poll(ctx, 10*time.Minute, 200*time.Millisecond, "fleet SVIDs", func() error {
			held := f.Held()
			s.h.bar(fmt.Sprintf("%d agents: SVIDs held", n), held, want)
			if held < want {
				return fmt.Errorf("compare: fleet holds %d of %d SVIDs", held, want)
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
		start := time.Now()
		for el := time.Duration(0); el < sz.FleetWindow; el = time.Since(start) {
			s.h.bar(fmt.Sprintf("%d agents: measuring", n), int(el/time.Second), int(sz.FleetWindow/time.Second))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(time.Second, sz.FleetWindow-el)):
			}
		}
		lat, failed, lastErr := f.Collect()
		wall := time.Since(start)
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

// growFleet attests agents until the fleet has n, a few at a time as a
// fleet rolling out would, and registers each one's entries.
func (s *scenarioRun) growFleet(ctx context.Context, srv *server, f *fleet.Fleet, n int) error {
	add := n - f.Len()
	if add <= 0 {
		return nil
	}
	var (
		mu    sync.Mutex
		ids   []*types.SPIFFEID
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
						ids = append(ids, &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()})
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
		return first
	}
	var es []*types.Entry
	for _, parent := range ids {
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
			return fmt.Errorf("compare: fleet entries: %w", err)
		}
		for _, r := range resp.Results {
			if c := codes.Code(r.Status.GetCode()); c != codes.OK {
				return fmt.Errorf("compare: fleet entry: %s: %s", c, r.Status.GetMessage())
			}
		}
		s.h.bar(fmt.Sprintf("%d agents: entries", n), min(len(es), i+500), len(es))
	}
	return nil
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
