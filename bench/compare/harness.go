package compare

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Sizes sets how much work each scenario does per implementation; a zero
// size skips its scenario.
type Sizes struct {
	// Rounds is how many times the implementations alternate (A B A B)
	// in every scenario but the cache one; work is split across rounds.
	Rounds int
	// Attestations is the number of join-token attestations (scenario 1).
	Attestations int
	// Entries is the number of entries propagated to one agent per round
	// (scenario 2).
	Entries int
	// WorkloadCalls is the number of FetchX509SVID calls per round and
	// concurrency (scenario 3).
	WorkloadCalls int
	// Concurrency lists the numbers of concurrent Workload API callers.
	Concurrency []int
	// Batches lists the BatchNewX509SVID batch sizes (scenario 4).
	Batches []int
	// BatchCSRs is the number of CSRs signed per batch size and round.
	BatchCSRs int
	// CacheEntries is the number of entries an agent caches when its
	// memory is measured (scenario 6, one round).
	CacheEntries int
	// LRUEntries and LRULimit are scenario 7's: entries no workload
	// matches, beyond an x509_svid_cache_max_size of LRULimit.
	LRUEntries, LRULimit int
	// IdleSettle is how long scenario 8 leaves an agent alone before
	// reading its memory.
	IdleSettle time.Duration
	// FleetSteps are the simulated fleet sizes tried in turn until p99
	// sync latency passes FleetTarget (scenario 5, one round).
	FleetSteps []int
	// FleetEntries is the number of entries of each simulated agent.
	FleetEntries int
	// FleetInterval is the simulated agents' sync interval.
	FleetInterval time.Duration
	// FleetWindow is how long each fleet size is measured. It spans
	// several of a server's garbage collections (and upstream's 5 s
	// cache reloads), so that whether one fell in the window is not
	// luck.
	FleetWindow time.Duration
	// FleetAlways: sizes up to it are measured even past a server's
	// capacity, so that both columns have the 1,000 agents.
	FleetAlways int
}

// FullSizes are the sizes, for `make bench-peer`.
func FullSizes() Sizes {
	return Sizes{Rounds: 5, Attestations: 50, Entries: 1000, WorkloadCalls: 200, Concurrency: []int{1, 8},
		Batches: []int{1, 50, 500}, BatchCSRs: 1000, CacheEntries: 10000, LRUEntries: 50000, LRULimit: 1000, IdleSettle: 12 * time.Second,
		FleetSteps: []int{250, 500, 750, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000, 7000, 8000, 10000}, FleetEntries: 10, FleetInterval: 5 * time.Second, FleetWindow: 30 * time.Second, FleetAlways: 1000}
}

// TinySizes exercise every code path in seconds, for `make test`.
func TinySizes() Sizes {
	return Sizes{Rounds: 1, Attestations: 3, Entries: 5, WorkloadCalls: 4, Concurrency: []int{1, 2},
		Batches: []int{1, 3}, BatchCSRs: 6, CacheEntries: 10, LRUEntries: 12, LRULimit: 4, IdleSettle: time.Second,
		FleetSteps: []int{2, 4}, FleetEntries: 2, FleetInterval: 200 * time.Millisecond, FleetWindow: time.Second}
}

// Harness runs the scenarios against Ours and, when set, Peer.
type Harness struct {
	Ours Impl
	// Peer is upstream SPIRE; nil runs ours alone.
	Peer *Impl
	// Lineage adds our agent with the lineage attestor to the Workload
	// API scenario.
	Lineage bool
	// FleetPush adds ours with change notices on to the fleet scenario,
	// as "ours (push)" beside ours polling, with the same binaries in
	// the same run: the A/B of what notice streams cost the server.
	FleetPush bool
	Sizes     Sizes
	// Progress receives progress bars; nil is silent.
	Progress io.Writer
	// Only, when set, runs just the scenarios whose numbers it lists
	// ("5" for the fleet), to explore one scenario without the hour.
	Only []string

	mu       sync.Mutex
	lastLine string
}

// Results holds every sample of a run, keyed by implementation name.
type Results struct {
	Sizes Sizes
	// Impls are the implementation names in report order (ours first,
	// the peer last).
	Impls []string
	// Peer names the peer, "" when ours ran alone.
	Peer        string
	Attest      map[string]*Dist
	Propagation map[string]*Dist
	// Fetch and Batch are keyed by concurrency and batch size.
	Fetch map[int]map[string]*Throughput
	Batch map[int]map[string]*Throughput
	Cache map[string]*CacheResult
	LRU   map[string]*LRUResult
	Idle  map[string]*IdleResult
	// Fleet holds each implementation's fleet sizes, smallest first.
	Fleet map[string][]FleetStep
	// FleetCPUs says how the fleet scenario split the CPUs between server
	// and simulator, "" when it could not.
	FleetCPUs string
	// Failures lists the scenario rounds that failed; the run went on.
	Failures []string
}

// CacheResult is an agent's memory with a full cache.
type CacheResult struct {
	Entries int
	// Fill is the time from the first entry created to the last SVID at
	// the Workload API.
	Fill                  time.Duration
	AgentRSS, AgentPeak   int64
	ServerRSS, ServerPeak int64
	// AgentSettled is the agent's RSS read again IdleSettle later (two
	// syncs), once the fill's last cache save and collections are over:
	// what holding the SVIDs costs, where AgentRSS is what it costs just
	// after getting them.
	AgentSettled int64
}

// Run runs every scenario and returns the samples. Cancelling ctx (the
// caller wires it to SIGINT) stops every process the run started and
// removes its directories before Run returns.
func (h *Harness) Run(ctx context.Context) (*Results, error) {
	root, err := os.MkdirTemp("", "cmp")
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	// BENCH_KEEP=1 keeps the directories (configs, data, each process's
	// log) for a look at a failed round.
	if os.Getenv("BENCH_KEEP") == "1" {
		fmt.Fprintf(os.Stderr, "compare: keeping %s\n", root)
	} else {
		defer os.RemoveAll(root)
	}
	g := &group{}
	defer g.stopAll()

	r := &Results{Sizes: h.Sizes, Attest: map[string]*Dist{}, Propagation: map[string]*Dist{},
		Fetch: map[int]map[string]*Throughput{}, Batch: map[int]map[string]*Throughput{}, Cache: map[string]*CacheResult{}, LRU: map[string]*LRUResult{}, Idle: map[string]*IdleResult{}}
	pair := []Impl{h.Ours}
	workload := []Impl{h.Ours}
	if h.Lineage {
		l := h.Ours
		l.Name, l.Lineage = h.Ours.Name+" (lineage)", true
		workload = append(workload, l)
	}
	fleets := []Impl{h.Ours}
	if h.FleetPush {
		p := h.Ours
		p.Name, p.FleetPush = h.Ours.Name+" (push)", true
		fleets = append(fleets, p)
	}
	// Report order: ours, its variants, the peer last.
	impls := append(slices.Clone(workload), fleets[1:]...)
	if h.Peer != nil {
		pair = append(pair, *h.Peer)
		workload = append(workload, *h.Peer)
		fleets = append(fleets, *h.Peer)
		impls = append(impls, *h.Peer)
		r.Peer = h.Peer.Name
	}
	for _, im := range impls {
		if err := im.Check(); err != nil {
			return nil, err
		}
		r.Impls = append(r.Impls, im.Name)
	}
	s := scenarioRun{h: h, g: g, root: root, r: r}
	steps := []struct {
		name   string
		impls  []Impl
		rounds int
		size   int
		f      func(context.Context, Impl, int) error
	}{
		{"1 attestation", pair, h.Sizes.Rounds, h.Sizes.Attestations, s.attestation},
		{"4 signing", pair, h.Sizes.Rounds, min(len(h.Sizes.Batches), h.Sizes.BatchCSRs), s.signing},
		{"3 workload", workload, h.Sizes.Rounds, min(len(h.Sizes.Concurrency), h.Sizes.WorkloadCalls), s.workload},
		{"2 propagation", pair, h.Sizes.Rounds, h.Sizes.Entries, s.propagation},
		{"6 cache", pair, 1, h.Sizes.CacheEntries, s.cache},
		{"7 lru", pair, 1, h.Sizes.LRUEntries, s.lru},
		{"8 idle", pair, 1, 1, s.idle},
		{"5 fleet", fleets, 1, min(len(h.Sizes.FleetSteps), h.Sizes.FleetEntries), s.fleet},
	}
	for _, st := range steps {
		if st.size <= 0 || (h.Only != nil && !slices.Contains(h.Only, strings.Fields(st.name)[0])) {
			continue
		}
		for round := 0; round < st.rounds; round++ {
			for _, im := range st.impls {
				h.status(fmt.Sprintf("scenario %s · %s · round %d/%d", st.name, im.Name, round+1, st.rounds))
				if err := st.f(ctx, im, round); err != nil {
					h.endLine()
					if ctx.Err() != nil {
						return nil, fmt.Errorf("compare: scenario %s, %s: %w", st.name, im.Name, err)
					}
					// One implementation failing a scenario must not
					// cost the hour of figures around it.
					r.Failures = append(r.Failures, fmt.Sprintf("scenario %s, %s, round %d: %v", st.name, im.Name, round+1, err))
					h.status("failed: " + err.Error())
				}
				// Each step leaves nothing running for the next.
				g.stopAll()
			}
		}
	}
	h.endLine()
	return r, nil
}

// status starts a new progress line.
func (h *Harness) status(line string) {
	if h.Progress == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastLine != "" {
		fmt.Fprintln(h.Progress)
	}
	h.lastLine = line
	fmt.Fprintf(h.Progress, "%s", line)
}

// bar redraws the current progress line with a bar for done of total.
func (h *Harness) bar(what string, done, total int) {
	if h.Progress == nil || total <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	const width = 30
	n := min(width, done*width/total)
	fmt.Fprintf(h.Progress, "\r\033[K%s  %s [%s%s] %d/%d", h.lastLine, what, strings.Repeat("#", n), strings.Repeat(".", width-n), done, total)
}

// endLine finishes the current progress line.
func (h *Harness) endLine() {
	if h.Progress == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastLine != "" {
		fmt.Fprintln(h.Progress)
		h.lastLine = ""
	}
}

// perRound splits total work across rounds, at least one each.
func perRound(total, rounds int) int {
	return max(1, (total+rounds-1)/rounds)
}
