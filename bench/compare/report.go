package compare

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Machine describes where a run happened; figures mean nothing without it.
type Machine struct {
	CPU, Kernel, Go, Date, Commit string
	Cores                         int
}

// ThisMachine reads the CPU model, kernel, Go version, date and the
// repository's commit.
func ThisMachine() Machine {
	m := Machine{CPU: "unknown CPU", Kernel: "unknown", Go: runtime.Version(), Cores: runtime.NumCPU(),
		Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Commit: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

// table builds a Markdown table whose columns are the implementations
// and, for each of ours, its advantage over the peer.
type table struct {
	r    *Results
	cols []string
	b    strings.Builder
}

func (r *Results) newTable(cols []string) *table {
	t := &table{r: r, cols: cols}
	t.b.WriteString("| |")
	for _, c := range cols {
		fmt.Fprintf(&t.b, " %s |", c)
	}
	ours := t.ours()
	for _, c := range ours {
		fmt.Fprintf(&t.b, " %s vs %s |", c, r.Peer)
	}
	t.b.WriteString("\n|---|")
	t.b.WriteString(strings.Repeat("---:|", len(cols)+len(ours)))
	t.b.WriteString("\n")
	return t
}

// ours lists the columns that get a ratio against the peer.
func (t *table) ours() []string {
	if t.r.Peer == "" {
		return nil
	}
	var o []string
	for _, c := range t.cols {
		if c != t.r.Peer {
			o = append(o, c)
		}
	}
	return o
}

// row adds a metric; cost says lower is better (latency, memory).
func (t *table) row(metric string, val func(impl string) (float64, bool), format func(float64) string, cost bool) {
	fmt.Fprintf(&t.b, "| %s |", metric)
	for _, c := range t.cols {
		if v, ok := val(c); ok {
			fmt.Fprintf(&t.b, " %s |", format(v))
		} else {
			t.b.WriteString(" – |")
		}
	}
	peer, pok := val(t.r.Peer)
	for _, c := range t.ours() {
		v, ok := val(c)
		if !ok || !pok {
			t.b.WriteString(" – |")
			continue
		}
		fmt.Fprintf(&t.b, " **%s** |", ratio(v, peer, cost))
	}
	t.b.WriteString("\n")
}

func (t *table) String() string { return t.b.String() }

func durFmt(v float64) string   { return fmtDur(time.Duration(v)) }
func rateFmt(v float64) string  { return fmt.Sprintf("%.0f/s", v) }
func bytesFmt(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }
func countFmt(v float64) string { return thousands(int(v)) }

// pairCols are the implementations scenario 1 ran (ours and the peer,
// not the lineage variant).
func (r *Results) pairCols() []string { return colsOf(r, r.Attest) }

// colsOf lists, in report order, the implementations m has results for.
func colsOf[V any](r *Results, m map[string]V) []string {
	var cols []string
	for _, c := range r.Impls {
		if _, ok := m[c]; ok {
			cols = append(cols, c)
		}
	}
	return cols
}

func distVal(m map[string]*Dist, q float64) func(string) (float64, bool) {
	return func(impl string) (float64, bool) {
		d, ok := m[impl]
		if !ok || len(d.Samples) == 0 {
			return 0, false
		}
		return float64(d.Quantile(q)), true
	}
}

func tpVal(m map[string]*Throughput, f func(*Throughput) float64) func(string) (float64, bool) {
	return func(impl string) (float64, bool) {
		t, ok := m[impl]
		if !ok {
			return 0, false
		}
		return f(t), true
	}
}

func cacheVal[V any](m map[string]V, f func(V) float64) func(string) (float64, bool) {
	return func(impl string) (float64, bool) {
		c, ok := m[impl]
		if !ok {
			return 0, false
		}
		return f(c), true
	}
}

// Tables renders the per-scenario tables, skipping scenarios that did
// not run.
func (r *Results) Tables() string {
	var b strings.Builder
	pair := r.pairCols()
	sz := r.Sizes

	if len(pair) > 0 {
		fmt.Fprintf(&b, "### 1. Node attestation (join token)\n\n")
		fmt.Fprintf(&b, "%d attestations per implementation, each on a new TLS connection: AttestAgent with a fresh token and CSR until the agent SVID is back (verified with go-spiffe).\n\n", len(r.Attest[pair[0]].Samples))
		t := r.newTable(pair)
		t.row("p50", distVal(r.Attest, 0.5), durFmt, true)
		t.row("p99", distVal(r.Attest, 0.99), durFmt, true)
		b.WriteString(t.String() + "\n")
	}

	if d := r.Propagation[r.Impls[0]]; d != nil {
		fmt.Fprintf(&b, "### 2. Entry propagation\n\n")
		fmt.Fprintf(&b, "%s entries created for one agent (BatchCreateEntry, 500 per call) until the Workload API stream of the matching workload holds every SVID; %d rounds per implementation.\n\n", thousands(sz.Entries), len(d.Samples))
		t := r.newTable(colsOf(r, r.Propagation))
		t.row("median", distVal(r.Propagation, 0.5), durFmt, true)
		t.row("slowest round", distVal(r.Propagation, 1), durFmt, true)
		b.WriteString(t.String() + "\n")
	}

	if len(r.Fetch) > 0 {
		fmt.Fprintf(&b, "### 3. Workload API: new-connection FetchX509SVID\n\n")
		fmt.Fprintf(&b, "`workloadapi.FetchX509SVID` (go-spiffe) with a new connection per call, %d calls per round and caller count, %d rounds.\n\n", sz.WorkloadCalls, sz.Rounds)
		t := r.newTable(r.Impls)
		for _, c := range sortedKeys(r.Fetch) {
			m := r.Fetch[c]
			t.row(fmt.Sprintf("p50, %d caller(s)", c), tpVal(m, func(t *Throughput) float64 { return float64(t.Calls.Quantile(0.5)) }), durFmt, true)
			t.row(fmt.Sprintf("p99, %d caller(s)", c), tpVal(m, func(t *Throughput) float64 { return float64(t.Calls.Quantile(0.99)) }), durFmt, true)
			t.row(fmt.Sprintf("calls/s, %d caller(s)", c), tpVal(m, (*Throughput).PerSecond), rateFmt, false)
		}
		b.WriteString(t.String() + "\n")
	}

	if len(r.Batch) > 0 {
		fmt.Fprintf(&b, "### 4. SVID signing: BatchNewX509SVID\n\n")
		fmt.Fprintf(&b, "The harness attests itself with a join token over the real API, registers entries under its agent ID and signs %d CSRs per batch size and round over mTLS, one call at a time; %d rounds.\n\n", sz.BatchCSRs, sz.Rounds)
		var cols []string
		for _, c := range r.Impls {
			if _, ok := r.Batch[sortedKeys(r.Batch)[0]][c]; ok {
				cols = append(cols, c)
			}
		}
		t := r.newTable(cols)
		for _, n := range sortedKeys(r.Batch) {
			m := r.Batch[n]
			t.row(fmt.Sprintf("CSRs/s, batches of %d", n), tpVal(m, (*Throughput).PerSecond), rateFmt, false)
			t.row(fmt.Sprintf("p50 per call, batches of %d", n), tpVal(m, func(t *Throughput) float64 { return float64(t.Calls.Quantile(0.5)) }), durFmt, true)
		}
		b.WriteString(t.String() + "\n")
	}

	if len(r.Fleet) > 0 {
		fmt.Fprintf(&b, "### 5. Fleet\n\n")
		fmt.Fprintf(&b, "sim/fleet runs many agents in the harness process, each attested with its own join token and holding its own mTLS connection, syncing every %v as SPIRE's agent does (GetBundle, SyncAuthorizedEntries, BatchNewX509SVID for new entries), %d entries each. Each size is measured for %v after every SVID is held; sizes grow until p99 sync latency passes %v",
			sz.FleetInterval, sz.FleetEntries, sz.FleetWindow, FleetTarget)
		if sz.FleetAlways > 0 {
			fmt.Fprintf(&b, " (sizes up to %s agents are measured regardless)", thousands(sz.FleetAlways))
		}
		b.WriteString(". ")
		if r.FleetCPUs != "" {
			fmt.Fprintf(&b, "Both servers run at equal CPU: %s (scheduler affinity, so neither server nor simulator can take the other's cycles). When the simulator's CPU nears what it has, it and not the server bounds the size, so a capacity is a lower bound for the server.\n\n", r.FleetCPUs)
		} else {
			fmt.Fprintf(&b, "The simulator shares the machine's %d CPUs with the server, so capacities here are a lower bound for a dedicated server.\n\n", runtime.NumCPU())
		}
		cols := colsOf(r, r.Fleet)
		stepOf := func(impl string, n int) (FleetStep, bool) {
			for _, st := range r.Fleet[impl] {
				if st.Agents == n {
					return st, true
				}
			}
			return FleetStep{}, false
		}
		step := func(n int, f func(FleetStep) float64) func(string) (float64, bool) {
			return func(impl string) (float64, bool) {
				st, ok := stepOf(impl, n)
				return f(st), ok
			}
		}
		capacity := func(impl string) int {
			best := 0
			for _, st := range r.Fleet[impl] {
				if st.Sustained() {
					best = st.Agents
				}
			}
			return best
		}
		t := r.newTable(cols)
		t.row(fmt.Sprintf("largest fleet with p99 < %v", FleetTarget), func(impl string) (float64, bool) {
			return float64(capacity(impl)), true
		}, func(v float64) string { return thousands(int(v)) }, false)
		// The sizes in full, and each implementation's largest.
		key := []int{1000, 10000}
		for _, impl := range cols {
			key = append(key, capacity(impl))
		}
		slices.Sort(key)
		key = slices.Compact(key)
		cores := func(v float64) string { return fmt.Sprintf("%.2f cores", v) }
		for _, n := range key {
			if n == 0 || !slices.Contains(sz.FleetSteps, n) {
				continue
			}
			a := thousands(n)
			t.row(fmt.Sprintf("p50 sync, %s agents", a), step(n, func(s FleetStep) float64 { return float64(s.P50) }), durFmt, true)
			t.row(fmt.Sprintf("p99 sync, %s agents", a), step(n, func(s FleetStep) float64 { return float64(s.P99) }), durFmt, true)
			t.row(fmt.Sprintf("server CPU, %s agents", a), step(n, func(s FleetStep) float64 { return s.CPU }), cores, true)
			t.row(fmt.Sprintf("server RSS, %s agents", a), step(n, func(s FleetStep) float64 { return float64(s.RSS) }), bytesFmt, true)
		}
		b.WriteString(t.String() + "\n")
		// The simulator's CPU is no figure of either implementation, so
		// it gets no ratio; it is here to show which side bounds a size.
		b.WriteString("Every size tried: p99 sync latency (server CPU, simulator CPU, in cores):\n\n")
		b.WriteString("| agents |")
		for _, impl := range cols {
			fmt.Fprintf(&b, " %s |", impl)
		}
		b.WriteString("\n|---:|" + strings.Repeat("---:|", len(cols)) + "\n")
		for _, n := range sz.FleetSteps {
			fmt.Fprintf(&b, "| %s |", thousands(n))
			for _, impl := range cols {
				if st, ok := stepOf(impl, n); ok {
					fmt.Fprintf(&b, " %s (%.2f, %.2f) |", durFmt(float64(st.P99)), st.CPU, st.SimCPU)
				} else {
					b.WriteString(" – |")
				}
			}
			b.WriteString("\n")
		}
		b.WriteString("\n![sync latency against fleet size](peer-fleet.svg)\n\n")
		for _, impl := range cols {
			for _, st := range r.Fleet[impl] {
				if st.Failed > 0 {
					fmt.Fprintf(&b, "%s, %s agents: %d of %d syncs failed.\n", impl, thousands(st.Agents), st.Failed, st.Failed+st.Syncs)
				}
			}
		}
		if len(cols) > 1 {
			b.WriteString(r.fleetPushSection(cols[0], cols[0]+" (push)"))
		}
	}

	if len(r.Cache) > 0 {
		fmt.Fprintf(&b, "### 6. Agent memory with %s entries cached\n\n", thousands(sz.CacheEntries))
		b.WriteString("One agent, every entry matching the harness (so every SVID is signed and held); memory read from /proc 1 s after the Workload API holds them all, and again after two syncs more.\n\n")
		t := r.newTable(colsOf(r, r.Cache))
		t.row("agent RSS", cacheVal(r.Cache, func(c *CacheResult) float64 { return float64(c.AgentRSS) }), bytesFmt, true)
		t.row("agent peak RSS", cacheVal(r.Cache, func(c *CacheResult) float64 { return float64(c.AgentPeak) }), bytesFmt, true)
		t.row("agent RSS "+sz.IdleSettle.String()+" later", cacheVal(r.Cache, func(c *CacheResult) float64 { return float64(c.AgentSettled) }), bytesFmt, true)
		t.row("server RSS", cacheVal(r.Cache, func(c *CacheResult) float64 { return float64(c.ServerRSS) }), bytesFmt, true)
		t.row("time to fill", cacheVal(r.Cache, func(c *CacheResult) float64 { return float64(c.Fill) }), durFmt, true)
		b.WriteString(t.String())
	}
	if len(r.LRU) > 0 {
		fmt.Fprintf(&b, "\n### 7. Agent memory with %s entries beyond an SVID cache of %s\n\n", thousands(sz.LRUEntries), thousands(sz.LRULimit))
		fmt.Fprintf(&b, "One agent with `x509_svid_cache_max_size = %d`; %s entries no workload matches are created, then, once the agent holds its %s SVIDs and has synced every entry, %d more that the harness matches (the cache is full, so neither agent mints them); the harness then opens a Workload API stream and waits for those %d SVIDs, which each agent mints on demand.\n\n",
			sz.LRULimit, thousands(sz.LRUEntries), thousands(sz.LRULimit), lruWanted, lruWanted)
		t := r.newTable(colsOf(r, r.LRU))
		t.row("agent RSS, entries synced, cache full", cacheVal(r.LRU, func(c *LRUResult) float64 { return float64(c.AgentRSS) }), bytesFmt, true)
		t.row("agent peak RSS", cacheVal(r.LRU, func(c *LRUResult) float64 { return float64(c.AgentPeak) }), bytesFmt, true)
		t.row("X.509-SVIDs held, cache full", cacheVal(r.LRU, func(c *LRUResult) float64 { return float64(c.Held) }), countFmt, false)
		t.row("stream open to the on-demand SVIDs", cacheVal(r.LRU, func(c *LRUResult) float64 { return float64(c.OnDemand) }), durFmt, true)
		t.row("X.509-SVIDs held with the stream open", cacheVal(r.LRU, func(c *LRUResult) float64 { return float64(c.HeldAfter) }), countFmt, false)
		b.WriteString(t.String())
	}
	if len(r.Idle) > 0 {
		fmt.Fprintf(&b, "\n### 8. Idle agent\n\n")
		fmt.Fprintf(&b, "One agent that attested, synced its one entry and handed the SVID to a workload, then was left alone for %s before its memory was read from /proc. Anonymous memory is the Go heap and stacks; the rest of the RSS is file-backed (the binary, the cache database's map).\n\n", sz.IdleSettle)
		t := r.newTable(colsOf(r, r.Idle))
		t.row("agent RSS", cacheVal(r.Idle, func(c *IdleResult) float64 { return float64(c.AgentRSS) }), bytesFmt, true)
		t.row("agent anonymous RSS", cacheVal(r.Idle, func(c *IdleResult) float64 { return float64(c.AgentAnon) }), bytesFmt, true)
		t.row("agent peak RSS", cacheVal(r.Idle, func(c *IdleResult) float64 { return float64(c.AgentPeak) }), bytesFmt, true)
		b.WriteString(t.String())
	}
	return b.String()
}

func sortedKeys[V any](m map[int]V) []int {
	var k []int
	for n := range m {
		k = append(k, n)
	}
	sort.Ints(k)
	return k
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// series is one line of a latency plot.
type series struct {
	label string
	d     Dist
}

// plotColors tells the implementations apart in plots.
var plotColors = []string{"#2a7", "#27c", "#c63", "#a4a"}

// CDFSVG plots the latency distributions of scenario 1 and of scenario 3
// with one caller as cumulative distributions on a log time axis, one
// panel each, so that tails are as visible as medians.
func (r *Results) CDFSVG() string {
	var panels []struct {
		title string
		s     []series
	}
	add := func(title string, get func(string) (Dist, bool)) {
		var s []series
		for _, impl := range r.Impls {
			if d, ok := get(impl); ok && len(d.Samples) > 0 {
				s = append(s, series{impl, d})
			}
		}
		if len(s) > 0 {
			panels = append(panels, struct {
				title string
				s     []series
			}{title, s})
		}
	}
	add("1. join-token attestation", func(i string) (Dist, bool) {
		d, ok := r.Attest[i]
		if !ok {
			return Dist{}, false
		}
		return *d, true
	})
	if len(r.Fetch) > 0 {
		c := sortedKeys(r.Fetch)[0]
		add(fmt.Sprintf("3. FetchX509SVID, new connection, %d caller(s)", c), func(i string) (Dist, bool) {
			t, ok := r.Fetch[c][i]
			if !ok {
				return Dist{}, false
			}
			return t.Calls, true
		})
	}
	const w, ph, left, right, top = 760, 260, 60, 20, 30
	h := len(panels)*(ph+60) + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	for pi, p := range panels {
		y0 := pi*(ph+60) + top
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, s := range p.s {
			for _, v := range s.d.Samples {
				lo = math.Min(lo, float64(v))
				hi = math.Max(hi, float64(v))
			}
		}
		lo = math.Pow(10, math.Floor(math.Log10(math.Max(lo, 1))))
		hi = math.Pow(10, math.Ceil(math.Log10(math.Max(hi, lo*10))))
		x := func(v float64) float64 {
			return left + (math.Log10(math.Max(v, lo))-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*(w-left-right)
		}
		y := func(q float64) float64 { return float64(y0) + 20 + (1-q)*float64(ph-40) }
		fmt.Fprintf(&b, `<text x="10" y="%d" font-size="14">%s: cumulative share of calls by latency (log scale)</text>`+"\n", y0+5, p.title)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888"/>`+"\n", left, y(0), w-right, y(0))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888"/>`+"\n", left, y(0), left, y(1))
		for _, q := range []float64{0.5, 0.99} {
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd" stroke-dasharray="4 3"/><text x="20" y="%.1f">p%.0f</text>`+"\n", left, y(q), w-right, y(q), y(q)+4, q*100)
		}
		for v := lo; v <= hi*1.001; v *= 10 {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n",
				x(v), y(0), x(v), y(0)+5, x(v), y(0)+18, fmtDur(time.Duration(v)))
		}
		for si, s := range p.s {
			sorted := append([]time.Duration(nil), s.d.Samples...)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
			var pts []string
			for i, v := range sorted {
				q := float64(i+1) / float64(len(sorted))
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(v)), y(q)))
			}
			color := plotColors[si%len(plotColors)]
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="12" height="3" fill="%s"/><text x="%d" y="%.1f">%s (p50 %s, p99 %s)</text>`+"\n",
				left+10, y(1)+6+float64(si)*16, color, left+28, y(1)+11+float64(si)*16, s.label, fmtDur(s.d.Quantile(0.5)), fmtDur(s.d.Quantile(0.99)))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// Markdown renders the whole report, headed by the machine and with the
// plot at plot (a path relative to the report).
func (r *Results) Markdown(m Machine, plot string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Side by side with upstream SPIRE (%s)\n\n", r.Peer)
	fmt.Fprintf(&b, "| | |\n|---|---|\n| machine | %s, %d CPUs |\n| kernel | %s |\n| Go | %s |\n| date | %s |\n| commit | %s |\n\n", m.CPU, m.Cores, m.Kernel, m.Go, m.Date, m.Commit)
	b.WriteString("Generated by `make bench-peer`: real binaries of both implementations, configured alike (SQLite, memory key managers, join token, unix workload attestor; rate limits off, since ours has none), on one machine in one run. Scenarios alternate the implementations round by round (A B A B) so that drift of this shared machine falls on both. Ratio columns say how many times better ours is (above 1: ours ahead; for latency and memory upstream/ours, for rates ours/upstream). The lineage column is our agent with its eBPF lineage workload attestor instead of unix.\n\n")
	fmt.Fprintf(&b, "![latency distributions](%s)\n\n", plot)
	if len(r.Failures) > 0 {
		b.WriteString("**Failed scenario rounds** (their figures are missing or from fewer rounds):\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
		b.WriteString("\n")
	}
	b.WriteString(r.Tables())
	b.WriteString(`
Both agents sync every 5 s by default (SPIRE's fixed interval, ours ` + "`experimental.sync_interval`" + `), and SPIRE's server reloads its entry cache every 5 s (its default full-reload cache, not the experimental events-based one), so propagation times are dominated by those intervals on both sides; the figures compare what users get with default settings.
`)
	return b.String()
}
