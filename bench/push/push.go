package push

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/agent/manager"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// agent is one real agent (agent/manager) of the benchmark.
type agent struct {
	id spiffeid.ID
	m  *manager.Manager
}

// startAgent attests a manager with a fresh join token and runs it until
// the test ends; with notices it waits until its stream is open.
func startAgent(tb testing.TB, s *servertest.Server, bundle *x509bundle.Bundle, interval time.Duration, notices bool) *agent {
	tb.Helper()
	token := s.CreateToken(tb)
	logs := &syncbuf.Buffer{}
	log, err := logging.NewWriter(logs, logging.NewLevel(0), "text")
	if err != nil {
		tb.Fatal(err)
	}
	m, err := manager.New(manager.Config{
		TrustDomain: servertest.TrustDomain, ServerAddress: s.Addr, DataDir: filepath.Join(tb.TempDir(), "agent"),
		TrustBundle: bundle.X509Authorities(), NodeAttestor: jointoken.New(token), KeyManager: memory.New(),
		SyncInterval: interval, DisableNotices: !notices, Log: log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		m.Close()
	})
	a := &agent{id: spiffeid.RequireFromPath(servertest.TrustDomain, "/spire/agent/join_token/"+token), m: m}
	want := "Node attestation succeeded"
	if notices {
		want = "Server pushes change notices"
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			tb.Fatalf("agent not ready:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a
}

// createEntries registers n entries parented to each agent, all with
// selector sel, in one call.
func createEntries(tb testing.TB, admin *grpc.ClientConn, agents []*agent, n int, sel, prefix string) {
	tb.Helper()
	var es []*types.Entry
	for _, a := range agents {
		for i := range n {
			es = append(es, &types.Entry{
				ParentId:  &types.SPIFFEID{TrustDomain: a.id.TrustDomain().Name(), Path: a.id.Path()},
				SpiffeId:  &types.SPIFFEID{TrustDomain: a.id.TrustDomain().Name(), Path: fmt.Sprintf("/%s/%s/%d", prefix, a.id.Path()[len("/spire/agent/join_token/"):], i)},
				Selectors: []*types.Selector{{Type: "unix", Value: sel}},
			})
		}
	}
	for len(es) > 0 {
		batch := es[:min(len(es), 1000)]
		es = es[len(batch):]
		resp, err := entryv1.NewEntryClient(admin).BatchCreateEntry(context.Background(), &entryv1.BatchCreateEntryRequest{Entries: batch})
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range resp.Results {
			if r.Status.Code != 0 {
				tb.Fatalf("create entry: %s", r.Status.Message)
			}
		}
	}
}

// propagation creates n entries per agent at once, rounds times at random
// points of the agents' sync interval, and
// returns, per agent, how long each round took until every new SVID was
// in that agent's cache.
func propagation(tb testing.TB, s *servertest.Server, agents []*agent, rounds, n int, interval, within time.Duration) [][]time.Duration {
	tb.Helper()
	admin := s.Admin(tb)
	out := make([][]time.Duration, len(agents))
	for r := range rounds {
		// A round starts just after the poll agent's sync that ended the
		// last one: a random pause samples the poll's phase uniformly.
		time.Sleep(time.Duration(rand.Int64N(int64(interval))))
		sel := "uid:" + strconv.Itoa(100000+r*10+n)
		subs := make([]func() bool, len(agents))
		for i, a := range agents {
			sub, err := a.m.SubscribeToCacheChanges(context.Background(), []*types.Selector{{Type: "unix", Value: sel}})
			if err != nil {
				tb.Fatal(err)
			}
			defer sub.Finish()
			<-sub.Updates()
			subs[i] = func() bool {
				for {
					select {
					case u := <-sub.Updates():
						if len(u.Identities) == n {
							return true
						}
					case <-time.After(within):
						return false
					}
				}
			}
		}
		start := time.Now()
		createEntries(tb, admin, agents, n, sel, "r"+strconv.Itoa(r))
		var wg sync.WaitGroup
		for i := range agents {
			wg.Go(func() {
				if !subs[i]() {
					tb.Errorf("round %d: agent %d did not get %d SVIDs within %v", r, i, n, within)
					return
				}
				out[i] = append(out[i], time.Since(start))
			})
		}
		wg.Wait()
		if tb.Failed() {
			tb.FailNow()
		}
	}
	return out
}

// quantile of sorted-on-demand samples (nearest rank).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// idleCost is what n subscribed, idle agents cost.
type idleCost struct {
	n int
	// heapPerStream and goroutinesPerStream are the process's growth from
	// n connected agents to the same agents subscribed, per stream; the
	// process holds both ends, so these bound the server's share from
	// above. stackPerStream is the goroutine stacks' share.
	heapPerStream, stackPerStream int64
	// serverHeapPerStream is the part of heapPerStream allocated on the
	// server's goroutines (by the heap profile's stacks).
	serverHeapPerStream int64
	goroutinesPerStream float64
	// waveCPU is the process CPU of one change that concerns none of the
	// n agents (it wakes every handler, which finds nothing to send), and
	// waveCPUNone the same with no one subscribed.
	waveCPU, waveCPUNone time.Duration
}

func dialAgent(s *servertest.Server, bundle *x509bundle.Bundle, svid *x509svid.SVID) (*grpc.ClientConn, error) {
	serverID := spiffeid.RequireFromPath(servertest.TrustDomain, "/spire/server")
	var cfg *tls.Config = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID))
	return grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

// measureIdle attests n agents as bare connections, then subscribes each
// and measures the growth; then the CPU of irrelevant changes.
func measureIdle(tb testing.TB, s *servertest.Server, bundle *x509bundle.Bundle, n, waves int) idleCost {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := s.Admin(tb)
	boot := s.Dial(tb, nil)
	conns := make([]*grpc.ClientConn, n)
	for i := range n {
		tok, err := agentv1.NewAgentClient(admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
		if err != nil {
			tb.Fatal(err)
		}
		key, csr := servertest.NewCSR(tb)
		svid, err := s.AttestJoinToken(ctx, boot, tok.Value, key, csr)
		if err != nil {
			tb.Fatal(err)
		}
		if conns[i], err = dialAgent(s, bundle, svid); err != nil {
			tb.Fatal(err)
		}
		defer conns[i].Close()
		// Connected and used once, as an agent between syncs.
		if _, err := entryv1.NewEntryClient(conns[i]).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
			tb.Fatal(err)
		}
	}
	c := idleCost{n: n}
	c.waveCPUNone = waveCPU(tb, admin, waves)
	// Every allocation of the subscriptions is profiled, to tell the
	// server's share from the client's.
	prevRate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	before := settle()
	streams := make([]*push.Stream, n)
	for i := range n {
		st, err := push.Subscribe(ctx, conns[i])
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			tb.Fatal(err)
		}
		streams[i] = st
	}
	after := settle()
	runtime.MemProfileRate = prevRate
	c.heapPerStream = int64(after.heap-before.heap) / int64(n)
	c.serverHeapPerStream = (after.serverHeap - before.serverHeap) / int64(n)
	c.stackPerStream = int64(after.stack-before.stack) / int64(n)
	c.goroutinesPerStream = float64(after.goroutines-before.goroutines) / float64(n)
	c.waveCPU = waveCPU(tb, admin, waves)
	runtime.KeepAlive(streams)
	return c
}

type memState struct {
	heap, stack uint64
	serverHeap  int64
	goroutines  int
}

func settle() memState {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memState{heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: runtime.NumGoroutine(), serverHeap: serverHeap()}
}

// serverFrames mark an allocation made on behalf of the server side of
// a connection or stream.
var serverFrames = []string{
	"grpc/internal/transport.(*http2Server)", "grpc/internal/transport.NewServerTransport",
	"google.golang.org/grpc.(*Server)", "google.golang.org/grpc.(*serverStream)",
	"spire-hw/server/",
}

// serverHeap sums the in-use bytes of the heap profile whose stacks
// pass through the server.
func serverHeap() int64 {
	n, _ := runtime.MemProfile(nil, false)
	recs := make([]runtime.MemProfileRecord, n+64)
	n, ok := runtime.MemProfile(recs, false)
	if !ok {
		return 0
	}
	var sum int64
	for _, r := range recs[:n] {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if slices.ContainsFunc(serverFrames, func(p string) bool { return strings.Contains(f.Function, p) }) {
				sum += r.InUseBytes()
				break
			}
			if !more {
				break
			}
		}
	}
	return sum
}

// waveCPU creates waves entries, one call each, parented to an ID no
// agent has, and returns the process CPU per change, measured after the
// feed's debounce and the wave have passed.
func waveCPU(tb testing.TB, admin *grpc.ClientConn, waves int) time.Duration {
	tb.Helper()
	time.Sleep(200 * time.Millisecond)
	start := cpuTime()
	for i := range waves {
		_, err := entryv1.NewEntryClient(admin).BatchCreateEntry(context.Background(), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
			ParentId:  &types.SPIFFEID{TrustDomain: servertest.TrustDomain.Name(), Path: "/nobody"},
			SpiffeId:  &types.SPIFFEID{TrustDomain: servertest.TrustDomain.Name(), Path: fmt.Sprintf("/wave/%d/%d", time.Now().UnixNano(), i)},
			Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}},
		}}})
		if err != nil {
			tb.Fatal(err)
		}
		// Past the feed's debounce, so that each change is its own wave.
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	return (cpuTime() - start) / time.Duration(waves)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
