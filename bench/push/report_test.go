package push

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
)

type sizes struct {
	interval   time.Duration
	rounds     int
	bulk       int // entries created at once in the bulk scenario
	bulkRounds int
	idleAgents int
	waves      int
	pushWithin time.Duration // the bound the push agent must meet per round
}

var (
	tiny = sizes{interval: time.Second, rounds: 3, bulk: 50, bulkRounds: 1, idleAgents: 20, waves: 3, pushWithin: 2 * time.Second}
	full = sizes{interval: 5 * time.Second, rounds: 30, bulk: 1000, bulkRounds: 3, idleAgents: 1000, waves: 20, pushWithin: 2 * time.Second}
)

// TestReport runs push and poll agents side by side against one server;
// under BENCH_REPORT=1 at full size, and writes bench/RESULTS-push.md.
func TestReport(t *testing.T) {
	report := os.Getenv("BENCH_REPORT") == "1"
	sz := tiny
	if report {
		sz = full
	}
	s := servertest.Start(t, servertest.Options{})
	bundle := s.Bundle(t)
	pushA := startAgent(t, s, bundle, sz.interval, true)
	pollA := startAgent(t, s, bundle, sz.interval, false)
	within := sz.interval + 10*time.Second

	one := propagation(t, s, []*agent{pushA, pollA}, sz.rounds, 1, sz.interval, within)
	bulk := propagation(t, s, []*agent{pushA, pollA}, sz.bulkRounds, sz.bulk, sz.interval, within+30*time.Second)
	// The bound the notices exist for; the poll cannot meet it at any
	// size where the interval exceeds it.
	if p := quantile(one[0], 1); p > sz.pushWithin {
		t.Errorf("push: slowest round %v, want under %v", p, sz.pushWithin)
	}
	if quantile(one[0], 0.5) >= quantile(one[1], 0.5) {
		t.Errorf("push median %v not below poll median %v", quantile(one[0], 0.5), quantile(one[1], 0.5))
	}
	idle := measureIdle(t, s, bundle, sz.idleAgents, sz.waves)
	t.Logf("one entry: push p50 %v p99 %v; poll p50 %v p99 %v", quantile(one[0], .5), quantile(one[0], .99), quantile(one[1], .5), quantile(one[1], .99))
	t.Logf("%d entries: push p50 %v; poll p50 %v", sz.bulk, quantile(bulk[0], .5), quantile(bulk[1], .5))
	t.Logf("idle: %+v", idle)
	if !report {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Change notices: entry propagation, push against poll\n\n")
	fmt.Fprintf(&b, "`BENCH_REPORT=1 go test -run TestReport ./bench/push/` on %d CPUs shared with other jobs, %s: one real server (servertest: SQLite, join_token, loopback TLS) and two real agents (agent/manager, memory key manager) in one process, both with a %v sync interval; one has change notices, the other `DisableNotices` (what it does against SPIRE's server). Each round creates one entry parented to each agent in one BatchCreateEntry call and times, per agent, from the call until the SVID is in the agent's cache (what the Workload API serves). Both agents in the same rounds.\n\n", runtime.NumCPU(), runtime.Version(), sz.interval)
	fmt.Fprintf(&b, "| one entry after attestation (%d rounds) | p50 | p99 | slowest |\n|---|---|---|---|\n", sz.rounds)
	for i, name := range []string{"push (notices)", "poll only"} {
		fmt.Fprintf(&b, "| %s | %v | %v | %v |\n", name, quantile(one[i], .5).Round(time.Millisecond), quantile(one[i], .99).Round(time.Millisecond), quantile(one[i], 1).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "\nPush is %.0fx faster at the median and %.0fx at p99.\n\n", ratio(quantile(one[1], .5), quantile(one[0], .5)), ratio(quantile(one[1], .99), quantile(one[0], .99)))
	fmt.Fprintf(&b, "| %d entries at once, until all %d SVIDs are cached (%d rounds) | median | slowest |\n|---|---|---|\n", sz.bulk, sz.bulk, sz.bulkRounds)
	for i, name := range []string{"push (notices)", "poll only"} {
		fmt.Fprintf(&b, "| %s | %v | %v |\n", name, quantile(bulk[i], .5).Round(time.Millisecond), quantile(bulk[i], 1).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "\nBoth agents mint in the same rounds, so the bulk figures share the CA's signing time; the difference is the wait for the poll.\n\n")
	fmt.Fprintf(&b, "## Idle cost of a subscribed agent (%d agents)\n\n", idle.n)
	fmt.Fprintf(&b, "%d agents attested and connected (each has made one call), then each opens its notice stream. The process holds both ends (client and server), so the figures bound the server's share from above.\n\n", idle.n)
	fmt.Fprintf(&b, "| per stream | |\n|---|---|\n| heap, both ends | %.1f KiB |\n| of which allocated by the server (heap profile at rate 1, by stack) | %.1f KiB |\n| goroutine stacks, both ends | %.1f KiB |\n| goroutines, both ends (the server's handler and the client's stream watcher) | %.2f |\n", float64(idle.heapPerStream)/1024, float64(idle.serverHeapPerStream)/1024, float64(idle.stackPerStream)/1024, idle.goroutinesPerStream)
	fmt.Fprintf(&b, "| process CPU of an entry change that concerns none of them, %d subscribed | %v |\n| the same with none subscribed | %v |\n\n", idle.n, idle.waveCPU.Round(10*time.Microsecond), idle.waveCPUNone.Round(10*time.Microsecond))
	fmt.Fprintf(&b, "A change wakes every handler once for a comparison of two numbers (its agent's entries digest, memoized per entry snapshot and reused by the sync it may trigger, and the bundle version); between changes a subscriber costs no CPU: there are no per-agent timers, and the feed goroutine looks for changes made elsewhere once a second for all of them.\n")
	old, _ := os.ReadFile("../RESULTS-push.md")
	if err := os.WriteFile("../RESULTS-push.md", []byte(keepFleetSection(b.String(), string(old))), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fleetSection heads the part of RESULTS-push.md this test does not write.
const fleetSection = "## Idle cost in the fleet scenario (10,000 agents)"

// keepFleetSection returns the report this test wrote followed by the
// fleet section of the old file, if it had one: that section comes from
// another harness (bench/compare's BENCH_FLEET_PUSH run at 10,000
// agents), so a run of this one must not drop it.
func keepFleetSection(report, old string) string {
	if i := strings.Index(old, fleetSection); i >= 0 {
		return report + "\n" + old[i:]
	}
	return report
}

// TestKeepFleetSection: a new report keeps the old file's fleet section,
// and only that; without one it is the report alone.
func TestKeepFleetSection(t *testing.T) {
	report := "# Change notices\n\nnew figures\n"
	old := "# Change notices\n\nold figures\n\n" + fleetSection + "\n\nfleet table\n"
	if got, want := keepFleetSection(report, old), report+"\n"+fleetSection+"\n\nfleet table\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := keepFleetSection(report, "# Change notices\n\nold figures\n"); got != report {
		t.Errorf("without a fleet section: got %q, want the report alone", got)
	}
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// BenchmarkPropagation reports the p50/p99 of one entry's propagation
// with notices and with the poll alone (5 s), in the same rounds.
func BenchmarkPropagation(b *testing.B) {
	s := servertest.Start(b, servertest.Options{})
	bundle := s.Bundle(b)
	agents := []*agent{startAgent(b, s, bundle, 5*time.Second, true), startAgent(b, s, bundle, 5*time.Second, false)}
	b.ResetTimer()
	d := propagation(b, s, agents, b.N, 1, 5*time.Second, 20*time.Second)
	b.StopTimer()
	b.ReportMetric(float64(quantile(d[0], .5).Microseconds())/1000, "push-p50-ms")
	b.ReportMetric(float64(quantile(d[0], .99).Microseconds())/1000, "push-p99-ms")
	b.ReportMetric(float64(quantile(d[1], .5).Microseconds())/1000, "poll-p50-ms")
	b.ReportMetric(float64(quantile(d[1], .99).Microseconds())/1000, "poll-p99-ms")
}
