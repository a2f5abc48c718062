package wlapi

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/protobuf/proto"
)

// fullSize is set by BENCH_REPORT=1: the tests then run at the sizes the
// report is made from.
var fullSize = os.Getenv("BENCH_REPORT") == "1"

// sizes are calls per round and kind, and rounds.
func sizes() (calls, rounds int) {
	if fullSize {
		return 1000, 9
	}
	return 50, 2
}

// gospiffeFetch is one new-connection FetchX509SVID through go-spiffe, as
// a workload makes it, checked to carry the expected SVID.
func gospiffeFetch(ctx context.Context, a *agent) (time.Duration, error) {
	start := time.Now()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+a.socket))
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if svid.ID != a.want {
		return 0, fmt.Errorf("got SVID %s, want %s", svid.ID, a.want)
	}
	return d, nil
}

// rawCheckedFetch is rawFetch, with the message checked to hold the
// expected SVID and its key (decoding is outside the timed part).
func rawCheckedFetch(a *agent, req []byte) (time.Duration, error) {
	d, msg, err := rawFetch(a.socket, req)
	if err != nil {
		return 0, err
	}
	var resp workload.X509SVIDResponse
	if err := proto.Unmarshal(msg, &resp); err != nil {
		return 0, err
	}
	if len(resp.Svids) != 1 || resp.Svids[0].SpiffeId != a.want.String() || len(resp.Svids[0].X509SvidKey) == 0 {
		return 0, fmt.Errorf("unexpected response: %d SVIDs", len(resp.Svids))
	}
	return d, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// dist is one agent's calls, by kind.
type dist struct {
	gospiffe, raw []time.Duration
	// serverGospiffe and serverRaw are the agent's own times (accept to
	// response written) of the same calls.
	serverGospiffe, serverRaw []time.Duration
	// roundP50 are each round's p50s, by kind.
	gospiffeP50, rawP50, serverRawP50 []time.Duration
}

// takeTimes fetches the agent's server times of the last n calls, each on
// its own connection. The client may read the response before the agent
// has recorded its write: a few retries give it the time.
func takeTimes(t *testing.T, a *agent, n int) []time.Duration {
	t.Helper()
	var d []time.Duration
	for try := 0; try < 1000 && len(d) < n; try++ {
		if try > 0 {
			time.Sleep(time.Millisecond)
		}
		x, err := a.serverTimes()
		if err != nil {
			t.Fatal(err)
		}
		d = append(d, x...)
	}
	if len(d) != n {
		t.Fatalf("%s agent timed %d responses for %d new-connection calls", a.mode, len(d), n)
	}
	return d
}

// TestShares times, in interleaved rounds against agent processes,
// new-connection FetchX509SVID through go-spiffe and through the raw HTTP/2
// client. The agent is this build ("current") and, if
// BENCH_WLAPI_BASELINE names the test binary of this package built from an
// older commit, that build too ("baseline"), so that a change is measured
// against its baseline in the same run. BENCH_WLAPI_PROFILE=<prefix> has
// each agent write a CPU profile to <prefix>.<mode>.
func TestShares(t *testing.T) {
	ctx := context.Background()
	req := rawRequest()
	calls, rounds := sizes()
	prof := os.Getenv("BENCH_WLAPI_PROFILE")
	bins := [][2]string{{"current", os.Args[0]}}
	if b := os.Getenv("BENCH_WLAPI_BASELINE"); b != "" {
		bins = append([][2]string{{"baseline", b}}, bins...)
	}
	var agents []*agent
	for _, b := range bins {
		p := ""
		if prof != "" {
			p = prof + "." + b[0]
		}
		agents = append(agents, spawnAgent(t, b[0], b[1], p))
	}
	// Warm-up: the first calls pay for lazy initialisation on both sides.
	for _, a := range agents {
		for range 20 {
			if _, err := gospiffeFetch(ctx, a); err != nil {
				t.Fatal(err)
			}
			if _, err := rawCheckedFetch(a, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, a := range agents {
		takeTimes(t, a, 40)
	}
	// BENCH_WLAPI_CLIENT_PROFILE=<file>: this process's CPU profile over
	// the rounds, which is the go-spiffe client's work (the raw client's
	// is a connect, a write and a few reads).
	if p := os.Getenv("BENCH_WLAPI_CLIENT_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	res := make([]dist, len(agents))
	for r := range rounds {
		for k := range agents {
			// Rounds alternate which agent goes first.
			i := (k + r) % len(agents)
			a, d := agents[i], &res[i]
			var g, w []time.Duration
			for range calls {
				x, err := gospiffeFetch(ctx, a)
				if err != nil {
					t.Fatal(err)
				}
				g = append(g, x)
			}
			sg := takeTimes(t, a, calls)
			for range calls {
				y, err := rawCheckedFetch(a, req)
				if err != nil {
					t.Fatal(err)
				}
				w = append(w, y)
			}
			sw := takeTimes(t, a, calls)
			d.gospiffe, d.raw = append(d.gospiffe, g...), append(d.raw, w...)
			d.serverGospiffe, d.serverRaw = append(d.serverGospiffe, sg...), append(d.serverRaw, sw...)
			d.gospiffeP50, d.rawP50 = append(d.gospiffeP50, median(g)), append(d.rawP50, median(w))
			d.serverRawP50 = append(d.serverRawP50, median(sw))
		}
	}
	for i, a := range agents {
		d := res[i]
		t.Logf("%s: go-spiffe p50 %v p99 %v (agent-side %v); raw p50 %v p99 %v (agent-side p50 %v p99 %v); round p50s go-spiffe %v raw %v agent-side %v",
			a.mode, median(d.gospiffe), pct(d.gospiffe, 0.99), median(d.serverGospiffe), median(d.raw), pct(d.raw, 0.99),
			median(d.serverRaw), pct(d.serverRaw, 0.99), d.gospiffeP50, d.rawP50, d.serverRawP50)
	}
	for i, d := range res {
		if len(d.serverRaw) != calls*rounds || len(d.raw) != calls*rounds {
			t.Fatalf("%s: %d raw calls timed, want %d", agents[i].mode, len(d.raw), calls*rounds)
		}
		// The agent side is part of the raw client's time: a server
		// clock that ran past the client's would be a broken measure.
		if median(d.serverRaw) > median(d.raw) {
			t.Errorf("%s: agent-side p50 %v exceeds the raw client's p50 %v", agents[i].mode, median(d.serverRaw), median(d.raw))
		}
	}
	results.shares = sharesTable(agents, res, calls, rounds)
	cur := median(res[len(res)-1].serverRaw)
	v := "**not met**"
	if cur <= 100*time.Microsecond {
		v = "met"
	}
	results.verdict = fmt.Sprintf("- Workload API new-connection FetchX509SVID, the agent's share <= 100 µs p50 (agent side, accept to response written): %s in this run (%s). "+
		"The same measure moves by about ±7%% from run to run on this shared machine (earlier runs of the current build at 2a4b036 and 87cdb63: 98.9, 110.7, 102.5, 110.2, 113.6 µs), so it sits at the target rather than safely under it.", v, us(cur))
	results.sharesTitle = " (this build alone: set BENCH_WLAPI_BASELINE to compare)"
	if len(agents) == 2 {
		results.sharesTitle = ", baseline and current build in the same interleaved run"
	}
}
