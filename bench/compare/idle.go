package compare

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// IdleResult is an agent's memory once attested, serving one SVID and
// otherwise idle.
type IdleResult struct {
	AgentRSS, AgentPeak int64
	// AgentAnon is the anonymous part of the RSS (the Go heap, stacks);
	// the rest is file-backed (the binary, the cache database's map).
	AgentAnon int64
}

// idle (scenario 8): an agent that attested, synced its one entry and
// handed its SVID to a workload, then left alone for Sizes.IdleSettle (two
// of its 5 s syncs at full size).
func (s *scenarioRun) idle(ctx context.Context, im Impl, _ int) error {
	srv, err := startServer(ctx, s.g, s.root, im)
	if err != nil {
		return err
	}
	defer srv.close()
	ag, err := startAgent(ctx, s.g, s.root, im, srv)
	if err != nil {
		return err
	}
	defer ag.proc.Stop()
	if _, err := srv.createEntries(ctx, ag.id, "/idle", 1, nil); err != nil {
		return err
	}
	conn, err := grpc.NewClient(ag.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("compare: workload API: %w", err)
	}
	sctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	// Until the agent has synced the entry, the stream ends at once with
	// PermissionDenied.
	err = poll(ctx, 60*time.Second, 100*time.Millisecond, "the workload's SVID", func() error {
		cctx, cancel := context.WithTimeout(sctx, 10*time.Second)
		defer cancel()
		st, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(cctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if len(resp.Svids) == 0 {
			return fmt.Errorf("compare: no SVID for the workload")
		}
		return nil
	})
	conn.Close()
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, s.h.Sizes.IdleSettle); err != nil {
		return err
	}
	res := &IdleResult{}
	if res.AgentRSS, res.AgentPeak, err = rss(ag.proc.Pid()); err != nil {
		return err
	}
	if res.AgentAnon, err = anonRSS(ag.proc.Pid()); err != nil {
		return err
	}
	if err := saveAgentHeap(ctx, im, "idle", ag.proc.Pid()); err != nil {
		return err
	}
	s.r.Idle[im.Name] = res
	return nil
}

// anonRSS is the anonymous part of a process's resident memory.
func anonRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, fmt.Errorf("compare: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(l, "Anonymous: %d kB", &kb); err == nil {
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("compare: no Anonymous in smaps_rollup of %d", pid)
}
