package ratelimit

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// countLines counts the log lines with msg.
func countLines(b *syncbuf.Buffer, msg string) int {
	return strings.Count(b.String(), `msg="`+msg+`"`)
}

// attempt sends one attestation with payload and returns the status code
// of the outcome.
func attempt(ctx context.Context, conn *grpc.ClientConn, payload string, csr []byte) codes.Code {
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return status.Code(err)
	}
	_ = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(payload)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	_, err = stream.Recv()
	return status.Code(err)
}

type floodResult struct {
	offered, accepted, limited, other int
	elapsed                           time.Duration
	legit                             []time.Duration
	legitErr                          error
	rateLines                         int
}

// runFlood floods from 127.0.0.1 with wrong tokens for d with workers
// goroutines (each attempt with a 1 s deadline, as a flooding client
// would set) while agents from other addresses attest, one every 100 ms.
func runFlood(t *testing.T, limit bool, d time.Duration, workers int) floodResult {
	logs := &syncbuf.Buffer{}
	opts := servertest.Options{Log: logs, RateLimits: true}
	if !limit {
		opts.ServerExtra = "ratelimit {\n attestation = false\n}"
	}
	s := servertest.Start(t, opts)
	_, csr := servertest.NewCSR(t)
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		conns[i] = s.DialFrom(t, "127.0.0.1", nil)
	}
	var offered, accepted, limited, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				code := attempt(ctx, conns[w%len(conns)], "5f1c9e2a-7b3d-4c8e-9a01-d2e3f4a5b6c7", csr)
				cancel()
				offered.Add(1)
				switch code {
				case codes.PermissionDenied:
					accepted.Add(1)
				case codes.ResourceExhausted:
					limited.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	var r floodResult
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		// Each attestation from an address of its own, so that the
		// agent's latency is the flood's cost, not its own address's
		// limit of one per second.
		legitConn := s.DialFrom(t, fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250), nil)
		token := s.CreateToken(t)
		key, lcsr := servertest.NewCSR(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		_, err := s.AttestJoinToken(ctx, legitConn, token, key, lcsr)
		cancel()
		if err != nil && r.legitErr == nil {
			r.legitErr = err
		}
		r.legit = append(r.legit, time.Since(t0))
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	r.elapsed = time.Since(start)
	r.offered, r.accepted, r.limited, r.other = int(offered.Load()), int(accepted.Load()), int(limited.Load()), int(other.Load())
	r.rateLines = countLines(logs, "Rate limit exceeded; call refused")
	return r
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func perSecond(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// TestReport measures attestation attempts per second accepted from one
// source with SPIRE's limit on and off, in the same run. It asserts only
// what the limit guarantees (accepted attempts within the burst plus one
// per second; the other source served; a bounded number of log lines).
func TestReport(t *testing.T) {
	full := os.Getenv("BENCH_REPORT") == "1"
	d, workers := 500*time.Millisecond, 4
	if full {
		d, workers = 10*time.Second, 16
	}
	on := runFlood(t, true, d, workers)
	off := runFlood(t, false, d, workers)
	for name, r := range map[string]floodResult{"limit on": on, "limit off": off} {
		if r.legitErr != nil {
			t.Errorf("%s: the agent from another source was refused during the flood: %v", name, r.legitErr)
		}
	}
	if max := 2 + int(on.elapsed.Seconds()); on.accepted > max {
		t.Errorf("limit on: %d attempts reached the attestor in %v, want at most %d", on.accepted, on.elapsed, max)
	}
	if on.rateLines > 1+int(on.elapsed/(10*time.Second)) {
		t.Errorf("limit on: %d rate-limit lines in %v for one source", on.rateLines, on.elapsed)
	}
	t.Logf("on: %+v", on)
	t.Logf("off: %+v", off)
	if !full {
		return
	}
	var b strings.Builder
	b.WriteString("# Rate limits: attestation attempts from one source\n\n")
	fmt.Fprintf(&b, "`BENCH_REPORT=1 go test -run TestReport ./bench/ratelimit/` on %d CPUs shared with other jobs, %s: a real server (SQLite, join_token) on loopback; %d goroutines on 4 connections from 127.0.0.1 send wrong join tokens for %v, each attempt with a 1 s deadline; meanwhile an agent attests with a valid token every 100 ms, each time from another address (127.0.x.y; one agent address alone would be held to 1/s by its own limit). Both rows in the same run; the limit-off row is the baseline (what the attestor itself can refuse).\n\n",
		runtime.NumCPU(), runtime.Version(), workers, d)
	b.WriteString("| ratelimit.attestation | attempts offered/s | attempts accepted/s (reached the attestor) | refused ResourceExhausted/s | other outcomes (timed out) | another source's attestation, median | rate-limit log lines |\n|---|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		r    floodResult
	}{{"true (SPIRE's default)", on}, {"false", off}} {
		r := row.r
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.0f | %d | %v | %d |\n", row.name, perSecond(r.offered, r.elapsed), perSecond(r.accepted, r.elapsed),
			perSecond(r.limited, r.elapsed), r.other, median(r.legit).Round(100*time.Microsecond), r.rateLines)
	}
	fmt.Fprintf(&b, "\nWith the limit on, the source gets %.2f attempts/s through: at most SPIRE's 1/s per IP plus the burst of one, and fewer here because a flooder whose 1 s deadline is shorter than the wait for the next token is refused at once (SPIRE's limiter waits, within the caller's deadline, rather than drops; the timed-out attempts had waited their turn and ran out of time). That is %.4f of the %.0f/s the attestor refuses with the limit off; an agent from another address attests in %.2fx its time under the unlimited flood (both floods keep the 2 CPUs busy; the limited one offers more attempts because refusing them is cheap). The source's refusals were logged in %d line(s) over %v (one per 10 s at most), each with the count it stood for.\n",
		perSecond(on.accepted, on.elapsed), perSecond(on.accepted, on.elapsed)/perSecond(off.accepted, off.elapsed), perSecond(off.accepted, off.elapsed),
		float64(median(on.legit))/float64(median(off.legit)), on.rateLines, on.elapsed.Round(100*time.Millisecond))
	if err := os.WriteFile("../RESULTS-ratelimit.md", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
