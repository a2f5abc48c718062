package compare

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/debug/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// lruWanted is how many entries of scenario 7 the harness matches.
const lruWanted = 10

// lruSettle is how long scenario 7 waits for an agent to have every entry
// created so far: two of the agents' 5 s syncs, after SPIRE's server has
// reloaded its 5 s entry cache.
const lruSettle = 16 * time.Second

// LRUResult is an agent with more entries than its X.509-SVID cache holds.
type LRUResult struct {
	Entries, Limit int
	// AgentRSS and AgentPeak are read once every entry is synced and the
	// cache is full.
	AgentRSS, AgentPeak int64
	// Held is the X.509-SVIDs the agent holds then (debug/v1 GetInfo).
	Held int
	// OnDemand is from opening the Workload API stream to the update
	// holding the lruWanted SVIDs the agent had not minted.
	OnDemand time.Duration
	// HeldAfter is the SVIDs held once the stream has them.
	HeldAfter int
}

// lru (scenario 7): SPIRE's x509_svid_cache_max_size at work. The agent
// gets LRUEntries entries no workload matches, holds LRULimit SVIDs for
// them, then lruWanted entries the harness matches, which it must mint
// when the harness asks.
func (s *scenarioRun) lru(ctx context.Context, im Impl, _ int) error {
	n, limit := s.h.Sizes.LRUEntries, s.h.Sizes.LRULimit
	srv, err := startServer(ctx, s.g, s.root, im)
	if err != nil {
		return err
	}
	defer srv.close()
	var adminSock string
	ag, err := startAgentWith(ctx, s.g, s.root, im, srv, func(dir string) string {
		// Beside the agent's directory, not in it: that one holds the
		// Workload API socket, and both agents refuse an admin socket
		// that workloads can reach.
		adminDir := dir + "-admin"
		_ = os.MkdirAll(adminDir, 0o700)
		adminSock = filepath.Join(adminDir, "admin.sock")
		return fmt.Sprintf("    x509_svid_cache_max_size = %d\n    admin_socket_path = %q\n", limit, adminSock)
	})
	if err != nil {
		return err
	}
	defer ag.proc.Stop()
	admin, err := grpc.NewClient("unix://"+adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("compare: admin API: %w", err)
	}
	defer admin.Close()
	held := func() (int, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, err := debugv1.NewDebugClient(admin).GetInfo(cctx, &debugv1.GetInfoRequest{})
		if err != nil {
			return 0, fmt.Errorf("compare: debug GetInfo: %w", err)
		}
		return int(info.CachedX509SvidsCount), nil
	}

	// A uid no process of this machine runs as.
	nobody := &types.Selector{Type: "unix", Value: "uid:2147483000"}
	if _, err := srv.createEntriesFor(ctx, ag.id, "/lru", n, nobody, func(done int) { s.h.bar("entries created", done, n) }); err != nil {
		return err
	}
	err = poll(ctx, time.Duration(n)*10*time.Millisecond+2*time.Minute, 500*time.Millisecond, "a full SVID cache", func() error {
		c, err := held()
		if err == nil && c < limit {
			err = fmt.Errorf("%d SVIDs held, want %d", c, limit)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, lruSettle); err != nil {
		return err
	}
	res := &LRUResult{Entries: n, Limit: limit}
	if res.AgentRSS, res.AgentPeak, err = rss(ag.proc.Pid()); err != nil {
		return err
	}
	if res.Held, err = held(); err != nil {
		return err
	}
	if err := saveAgentHeap(ctx, im, "lru", ag.proc.Pid()); err != nil {
		return err
	}

	if _, err := srv.createEntries(ctx, ag.id, "/wanted", lruWanted, nil); err != nil {
		return err
	}
	if err := sleepCtx(ctx, lruSettle); err != nil {
		return err
	}
	conn, err := grpc.NewClient(ag.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("compare: workload API: %w", err)
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), 2*time.Minute)
	defer cancel()
	start := time.Now()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(sctx, &workload.X509SVIDRequest{})
	if err != nil {
		return fmt.Errorf("compare: workload stream: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("compare: workload stream (the %d on-demand SVIDs): %w", lruWanted, err)
		}
		if len(resp.Svids) >= lruWanted {
			break
		}
	}
	res.OnDemand = time.Since(start)
	if res.HeldAfter, err = held(); err != nil {
		return err
	}
	if res.HeldAfter < lruWanted {
		return errors.New("compare: the agent serves SVIDs it does not count as held")
	}
	s.r.LRU[im.Name] = res
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// saveAgentHeap writes the agent's heap profile to
// $BENCH_AGENT_PROFILE/<impl>-<scenario>-heap.pprof when both that and
// BENCH_AGENT_PPROF are set, so that a memory figure comes with where the
// memory goes; <impl>-<scenario>-smaps.txt beside it has the kernel's
// split of the resident memory by mapping (anonymous: the Go heap and stacks; file:
// the binary and bbolt's map of the cache). <impl>-<scenario>-heap.txt is
// the same profile as text, which ends with the runtime's MemStats: how
// much of the anonymous part is heap in use, idle or the next GC's goal.
func saveAgentHeap(ctx context.Context, im Impl, scenario string, pid int) error {
	dir, port := os.Getenv("BENCH_AGENT_PROFILE"), os.Getenv("BENCH_AGENT_PPROF")
	if dir == "" || port == "" {
		return nil
	}
	for _, f := range []struct{ endpoint, name string }{{"heap", "heap.pprof"}, {"heap?debug=1", "heap.txt"}} {
		if err := fetchProfile(ctx, port, f.endpoint, filepath.Join(dir, im.Name+"-"+scenario+"-"+f.name)); err != nil {
			return err
		}
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, im.Name+"-"+scenario+"-smaps.txt"), smaps, 0o644)
}
