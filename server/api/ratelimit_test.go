package api_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// flood sends n wrong-token attestations over conns, each with a short
// deadline as a flooding client would set, and counts the outcomes by code.
func flood(t *testing.T, s *servertest.Server, conns []*grpc.ClientConn, n int) map[codes.Code]int {
	t.Helper()
	var mu sync.Mutex
	got := map[codes.Code]int{}
	var wg sync.WaitGroup
	work := make(chan int)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := attestWrong(ctx, t, s, conns[w%len(conns)], "join_token", []byte(wrongToken))
				cancel()
				st := status.Convert(err)
				if st.Code() == codes.ResourceExhausted && !strings.HasPrefix(st.Message(), "rejecting request due to attest agent rate limiting: rate: Wait(n=1) would exceed context deadline") {
					t.Errorf("ResourceExhausted with message %q, want SPIRE's", st.Message())
				}
				code := st.Code()
				if code != codes.ResourceExhausted && code != codes.PermissionDenied && strings.Contains(st.Message(), "deadline exceeded") {
					// It waited its turn and then ran out of time (the
					// join-token attestor reports that as Internal).
					code = codes.DeadlineExceeded
				}
				mu.Lock()
				got[code]++
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return got
}

// TestAttestationFloodRateLimited floods AttestAgent with wrong join tokens
// from 127.0.0.1: all but the first (SPIRE's burst of one) are refused with
// ResourceExhausted and SPIRE's message, never reach the attestor, and are
// logged once, while agents from other sources attest during the flood and
// a patient caller from the flooded source is served once its turn comes.
func TestAttestationFloodRateLimited(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, RateLimits: true})
	var conns []*grpc.ClientConn
	for range 4 {
		conns = append(conns, s.DialFrom(t, "127.0.0.1", nil))
	}
	const attempts = 200

	// Legitimate agents attest from other addresses while the flood runs.
	legit := make(chan error, 3)
	go func() {
		for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
			token := s.CreateToken(t)
			key, csr := servertest.NewCSR(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := s.AttestJoinToken(ctx, s.DialFrom(t, ip, nil), token, key, csr)
			cancel()
			if err != nil {
				err = status.Errorf(status.Code(err), "legitimate agent %d from %s: %v", i, ip, err)
			}
			legit <- err
		}
	}()
	start := time.Now()
	got := flood(t, s, conns, attempts)
	elapsed := time.Since(start)
	for range 3 {
		if err := <-legit; err != nil {
			t.Error(err)
		}
	}

	// Attempts that passed the limiter reached the attestor and were
	// refused there: at most the burst plus one per second of flood.
	// Some may run out of time instead (under the race detector, before
	// or after the limiter); they count on neither side.
	passed := got[codes.PermissionDenied]
	if max := 2 + int(elapsed.Seconds()); passed < 1 || passed > max {
		t.Errorf("%d of %d attempts reached the attestor in %v, want 1..%d (%v)", passed, attempts, elapsed, max, got)
	}
	if got[codes.ResourceExhausted]+passed+got[codes.DeadlineExceeded] != attempts || got[codes.ResourceExhausted] < attempts/2 {
		t.Errorf("outcomes %v, want ResourceExhausted for most, PermissionDenied for the rest", got)
	}

	// A caller from the flooded address that waits (no deadline, as
	// SPIRE's agents) is served when its turn comes.
	token := s.CreateToken(t)
	key, csr := servertest.NewCSR(t)
	if _, err := s.AttestJoinToken(context.Background(), conns[0], token, key, csr); err != nil {
		t.Errorf("patient agent from the flooded address: %v", err)
	}

	limited := logs.lines("Rate limit exceeded; call refused", "method="+"/spire.api.server.agent.v1.Agent/AttestAgent", "caller_addr=127.0.0.1:")
	if len(limited) != 1 {
		t.Errorf("%d rate-limit lines for %d refusals within one interval, want 1:\n%s", len(limited), got[codes.ResourceExhausted], strings.Join(limited, "\n"))
	}
	if refused := logs.lines("Agent attestation refused", "caller_addr=127.0.0.1:"); len(refused) != 1 {
		t.Errorf("%d attestation-refused lines for %d refusals, want 1", len(refused), passed)
	}
	if strings.Contains(logs.String(), wrongToken) {
		t.Error("the wrong join token's value is in the log")
	}
}

// TestAttestationLimitOff: with ratelimit { attestation = false } every
// attempt reaches the attestor.
func TestAttestationLimitOff(t *testing.T) {
	s := servertest.Start(t, servertest.Options{RateLimits: true, ServerExtra: "ratelimit {\n attestation = false\n}"})
	const attempts = 30
	got := flood(t, s, []*grpc.ClientConn{s.DialFrom(t, "127.0.0.1", nil)}, attempts)
	if got[codes.PermissionDenied] != attempts {
		t.Errorf("outcomes %v, want all %d PermissionDenied", got, attempts)
	}
}

// signLimit is api.SignLimitPerIP.
const signLimit = 500

// TestSigningLimitCountsCSRs: BatchNewX509SVID draws one unit per CSR from
// the per-IP budget of 500 per second, so one batch of 501 can never be
// served, and batches beyond the budget wait their turn within their
// deadline or are refused at once; while they wait, RenewAgent, which
// shares the budget, is refused, and NewJWTSVID, which has its own, is not.
//
// Nothing here depends on how fast the machine is: deadlines are seconds
// long wherever a timeout would be a false failure, and what the limiter
// grants is checked against the time that really passed, not against a
// gap between two calls assumed short.
func TestSigningLimitCountsCSRs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string
		limit bool
	}{
		{name: "on by default", limit: true},
		{name: "signing = false", extra: "ratelimit {\n signing = false\n}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := servertest.Start(t, servertest.Options{RateLimits: true, ServerExtra: tc.extra})
			agent := s.NewAgent(t)
			client := svidv1.NewSVIDClient(agent.Conn)
			batch := func(n int, timeout time.Duration) error {
				params := make([]*svidv1.NewX509SVIDParams, n)
				for i := range params {
					// Entries the agent is not authorized for: refused
					// per item, after the limit was charged.
					params[i] = &svidv1.NewX509SVIDParams{EntryId: "unknown", Csr: []byte{0}}
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				_, err := client.BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: params})
				return err
			}
			// With the limit on, 501 CSRs are refused at once whatever the
			// time: they exceed the burst.
			err := batch(501, 10*time.Second)
			if !tc.limit {
				if err != nil {
					t.Fatalf("501 CSRs with the limit off: %v", err)
				}
				for _, n := range []int{500, 500, 400} {
					if err := batch(n, 10*time.Second); err != nil {
						t.Fatalf("%d more CSRs with the limit off: %v", n, err)
					}
				}
				return
			}
			wantCode(t, err, codes.ResourceExhausted)
			if want := "rejecting request due to certificate signing rate limiting: rate (501) exceeds burst size (500)"; status.Convert(err).Message() != want {
				t.Errorf("message %q, want %q", status.Convert(err).Message(), want)
			}

			// Twenty batches of 400 at once, each with 4 s to be served:
			// the budget grants at most 500 CSRs plus 500 a second, and a
			// batch is let wait only for a turn within its deadline, so
			// some are served after waiting and the rest refused at once.
			const batches, size, deadline = 20, 400, 4 * time.Second
			start := time.Now()
			results := make(chan error, batches)
			for range batches {
				go func() { results <- batch(size, deadline) }()
			}
			// While they wait, the shared budget is spent ahead: a
			// RenewAgent is refused, and a NewJWTSVID asked right after
			// it, with the same short deadline, is served, as its budget
			// is its own (were it shared, it would be refused too). Probes
			// that time out (a loaded machine) are asked again until the
			// batches end; a timeout is never a failure.
			var renewLimited, jwtServed bool
			var jwtErrs []error
			var outcomes []error
		probe:
			for !renewLimited || !jwtServed {
				select {
				case err := <-results:
					outcomes = append(outcomes, err)
					if len(outcomes) == batches {
						break probe
					}
					continue
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				_, err := agentv1.NewAgentClient(agent.Conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: []byte("junk")}})
				cancel()
				if status.Code(err) != codes.ResourceExhausted || !strings.HasPrefix(status.Convert(err).Message(), "rejecting request due to renew agent rate limiting: ") {
					continue
				}
				renewLimited = true
				ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
				_, err = client.NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: "unknown", Audience: []string{"a"}})
				cancel()
				switch status.Code(err) {
				case codes.PermissionDenied:
					jwtServed = true
				case codes.ResourceExhausted:
					t.Fatalf("NewJWTSVID limited by the CSR budget: %v", err)
				default:
					jwtErrs = append(jwtErrs, err)
				}
			}
			for len(outcomes) < batches {
				outcomes = append(outcomes, <-results)
			}
			elapsed := time.Since(start)
			if !renewLimited || !jwtServed {
				t.Errorf("while %d batches of %d waited: RenewAgent limited %v, NewJWTSVID served %v (%v)", batches, size, renewLimited, jwtServed, jwtErrs)
			}
			got := map[codes.Code]int{}
			for _, err := range outcomes {
				st := status.Convert(err)
				got[st.Code()]++
				switch st.Code() {
				case codes.OK, codes.DeadlineExceeded:
					// Served, or served late: it waited its turn and ran
					// out of time while its CSRs were being refused.
				case codes.ResourceExhausted:
					if want := "rejecting request due to certificate signing rate limiting: rate: Wait(n=400) would exceed context deadline"; st.Message() != want {
						t.Errorf("message %q, want %q", st.Message(), want)
					}
				default:
					t.Errorf("batch: %v", err)
				}
			}
			t.Logf("%v in %v", got, elapsed)
			// Whatever the machine's speed, the limiter grants no more
			// than its budget over the time that passed.
			if granted, most := got[codes.OK]*size, signLimit*(2+int(elapsed.Seconds())); granted > most {
				t.Errorf("%d CSRs granted in %v, at most %d fit the budget", granted, elapsed, most)
			}
			if got[codes.OK] < 2 {
				t.Errorf("%d batches served, want the first and at least one that waited its turn", got[codes.OK])
			}
			// A batch is let wait only if its turn comes within its 4 s,
			// so the batches that arrived within a seconds of the start
			// can have reserved at most 500*(1+a+4) CSRs; every batch
			// arrived before its outcome, so a <= elapsed, and with less
			// than 11 s elapsed some of the 8,000 CSRs were refused.
			if got[codes.ResourceExhausted] == 0 && elapsed < 11*time.Second {
				t.Errorf("no batch refused although %d CSRs cannot fit the budget within %v", batches*size, elapsed)
			}
		})
	}
}
