package wlapi

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// timeline records, for calls made one at a time, when the agent's gRPC
// server reached each step of a new-connection call, as offsets from the
// client's dial.
type timeline struct {
	mu    sync.Mutex
	start time.Time
	marks map[string]time.Duration
	all   map[string][]time.Duration
}

func (tl *timeline) begin() {
	tl.mu.Lock()
	tl.start, tl.marks = time.Now(), map[string]time.Duration{}
	tl.mu.Unlock()
}

func (tl *timeline) mark(step string) {
	tl.mu.Lock()
	if _, ok := tl.marks[step]; !ok && tl.marks != nil {
		tl.marks[step] = time.Since(tl.start)
	}
	tl.mu.Unlock()
}

func (tl *timeline) end() {
	tl.mu.Lock()
	for k, v := range tl.marks {
		tl.all[k] = append(tl.all[k], v)
	}
	tl.marks = nil
	tl.mu.Unlock()
}

func (tl *timeline) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (tl *timeline) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	tl.mark("1 transport up (handshake done)")
	return ctx
}
func (tl *timeline) HandleConn(context.Context, stats.ConnStats) {}
func (tl *timeline) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch s.(type) {
	case *stats.InHeader:
		tl.mark("2 request headers read")
	case *stats.OutPayload:
		tl.mark("5 response queued to the writer")
	}
}

type timedStream struct {
	grpc.ServerStream
	tl *timeline
}

func (s timedStream) SendMsg(m any) error {
	s.tl.mark("4 handler sends (attested, composed)")
	return s.ServerStream.SendMsg(m)
}

// TestTimeline prints where a new-connection FetchX509SVID from the raw
// client spends its time in an in-process agent (server-side timestamps).
func TestTimeline(t *testing.T) {
	tl := &timeline{all: map[string][]time.Duration{}}
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveAgent(ctx, t, socket, &serverTimes{}, grpc.StatsHandler(tl),
			grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				tl.mark("3 handler starts")
				return h(srv, timedStream{ss, tl})
			}))
	}()
	defer func() { cancel(); <-done }()
	waitSocket(t, socket)
	a := &agent{socket: socket, want: spiffeIDWant()}
	req := rawRequest()
	calls, _ := sizes()
	for i := range 20 + 3*calls {
		tl.begin()
		d, err := rawCheckedFetch(a, req)
		if err != nil {
			t.Fatal(err)
		}
		tl.mark("6 client has the response")
		_ = d
		if i >= 20 {
			tl.end()
		} else {
			tl.mu.Lock()
			tl.marks = nil
			tl.mu.Unlock()
		}
	}
	var steps []string
	for k := range tl.all {
		steps = append(steps, k)
	}
	sort.Strings(steps)
	var b, md strings.Builder
	md.WriteString("| step | offset from dial, p50 |\n|---|---:|\n")
	for _, k := range steps {
		// gRPC may report the queued response (step 5) only after the
		// client has read it, which closes that call's timeline: a few
		// calls may lack a step, most may not.
		if n := len(tl.all[k]); n < 3*calls*95/100 || n > 3*calls {
			t.Fatalf("step %q seen in %d of %d calls", k, n, 3*calls)
		}
		fmt.Fprintf(&b, "%-40s p50 %v\n", k, median(tl.all[k]))
		fmt.Fprintf(&md, "| %s | %s |\n", k, us(median(tl.all[k])))
	}
	t.Logf("offsets from the client's dial:\n%s", b.String())
	fmt.Fprintf(&md, "\n%d calls after 20 warm-up calls.\n", 3*calls)
	results.timeline = md.String()
}
