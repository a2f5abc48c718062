package compare

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// scenarioRun carries one Run's state into the scenario steps.
type scenarioRun struct {
	h    *Harness
	g    *group
	root string
	r    *Results
	csrs []keyCSR // shared by every signing round, made once
}

// attestation (scenario 1) times join-token node attestation as an agent
// does it: a new TLS connection, AttestAgent, the agent SVID back.
func (s *scenarioRun) attestation(ctx context.Context, im Impl, _ int) error {
	srv, err := startServer(ctx, s.g, s.root, im)
	if err != nil {
		return err
	}
	defer srv.close()
	n := perRound(s.h.Sizes.Attestations, s.h.Sizes.Rounds)
	tokens := make([]string, n)
	keys := make([]keyCSR, n)
	for i := range n {
		if tokens[i], err = srv.token(ctx); err != nil {
			return err
		}
		if keys[i], err = newKeyCSR(); err != nil {
			return err
		}
	}
	d := s.r.Attest[im.Name]
	if d == nil {
		d = &Dist{}
		s.r.Attest[im.Name] = d
	}
	for i := range n {
		start := time.Now()
		conn, err := srv.dial(nil)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		svid, err := srv.attest(cctx, conn, tokens[i], keys[i])
		cancel()
		conn.Close()
		if err != nil {
			return err
		}
		d.Add(time.Since(start))
		if want := "/spire/agent/join_token/" + tokens[i]; svid.ID.Path() != want {
			return fmt.Errorf("compare: agent ID %s, want path %s", svid.ID, want)
		}
		s.h.bar("attestations", i+1, n)
	}
	return nil
}

// signing (scenario 4) attests itself with a join token, registers
// entries under its own agent ID and signs CSRs for them through
// BatchNewX509SVID over mTLS, as an agent's sync does.
func (s *scenarioRun) signing(ctx context.Context, im Impl, _ int) error {
	maxBatch := 0
	for _, b := range s.h.Sizes.Batches {
		maxBatch = max(maxBatch, b)
	}
	for len(s.csrs) < maxBatch {
		kc, err := newKeyCSR()
		if err != nil {
			return err
		}
		s.csrs = append(s.csrs, kc)
	}
	srv, err := startServer(ctx, s.g, s.root, im)
	if err != nil {
		return err
	}
	defer srv.close()
	conn, svid, err := s.attestSelf(ctx, srv)
	if err != nil {
		return err
	}
	defer conn.Close()
	ids, err := srv.createEntries(ctx, svid.ID, "/batch", maxBatch, nil)
	if err != nil {
		return err
	}
	// SPIRE authorizes from an entry cache it reloads every 5 s; signing
	// starts once the server would let a real agent sign them all.
	err = poll(ctx, 60*time.Second, 250*time.Millisecond, "authorized entries", func() error {
		resp, err := entryv1.NewEntryClient(conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
		if err != nil {
			return err
		}
		if len(resp.Entries) < maxBatch {
			return fmt.Errorf("compare: %d of %d entries authorized", len(resp.Entries), maxBatch)
		}
		return nil
	})
	if err != nil {
		return err
	}
	client := svidv1.NewSVIDClient(conn)
	for _, b := range s.h.Sizes.Batches {
		calls := max(1, s.h.Sizes.BatchCSRs/b)
		req := &svidv1.BatchNewX509SVIDRequest{}
		for i := range b {
			req.Params = append(req.Params, &svidv1.NewX509SVIDParams{EntryId: ids[i], Csr: s.csrs[i].csr})
		}
		var tp Throughput
		var last *svidv1.BatchNewX509SVIDResponse
		wall := time.Now()
		for c := range calls {
			start := time.Now()
			resp, err := client.BatchNewX509SVID(ctx, req)
			if err != nil {
				return fmt.Errorf("compare: batch of %d: %w", b, err)
			}
			tp.Calls.Add(time.Since(start))
			if len(resp.Results) != b {
				return fmt.Errorf("compare: batch of %d answered %d results", b, len(resp.Results))
			}
			for _, res := range resp.Results {
				if code := codes.Code(res.Status.GetCode()); code != codes.OK {
					return fmt.Errorf("compare: batch of %d: %s: %s", b, code, res.Status.GetMessage())
				}
			}
			last = resp
			s.h.bar(fmt.Sprintf("batches of %d", b), c+1, calls)
		}
		tp.Wall, tp.Items = time.Since(wall), calls*b
		// Only valid SVIDs count: verify the last batch with go-spiffe.
		for i, res := range last.Results {
			if _, err := srv.verifySVID(res.Svid.CertChain, s.csrs[i].key); err != nil {
				return err
			}
		}
		m := s.r.Batch[b]
		if m == nil {
			m = map[string]*Throughput{}
			s.r.Batch[b] = m
		}
		if m[im.Name] == nil {
			m[im.Name] = &Throughput{}
		}
		m[im.Name].Merge(tp)
	}
	return nil
}

// attestSelf attests the harness as an agent and returns an mTLS
// connection with the agent SVID.
func (s *scenarioRun) attestSelf(ctx context.Context, srv *server) (*grpc.ClientConn, *x509svid.SVID, error) {
	token, err := srv.token(ctx)
	if err != nil {
		return nil, nil, err
	}
	kc, err := newKeyCSR()
	if err != nil {
		return nil, nil, err
	}
	tconn, err := srv.dial(nil)
	if err != nil {
		return nil, nil, err
	}
	defer tconn.Close()
	svid, err := srv.attest(ctx, tconn, token, kc)
	if err != nil {
		return nil, nil, err
	}
	conn, err := srv.dial(svid)
	if err != nil {
		return nil, nil, err
	}
	return conn, svid, nil
}

// workload (scenario 3) times FetchX509SVID through go-spiffe, each call
// on a new connection, with one and with several concurrent callers.
func (s *scenarioRun) workload(ctx context.Context, im Impl, _ int) error {
	srv, err := startServer(ctx, s.g, s.root, im)
	if err != nil {
		return err
	}
	defer srv.close()
	ag, err := startAgent(ctx, s.g, s.root, im, srv)
	if err != nil {
		return err
	}
	if _, err := srv.createEntries(ctx, ag.id, "/workload", 1, nil); err != nil {
		return err
	}
	want := spiffeid.RequireFromPath(trustDomain, "/workload/0")
	err = poll(ctx, 60*time.Second, 200*time.Millisecond, "workload SVID", func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchX509SVID(cctx, workloadapi.WithAddr(ag.addr()))
		if err != nil {
			return err
		}
		if _, _, err := x509svid.Verify(svid.Certificates, srv.bundle); err != nil {
			return fmt.Errorf("compare: workload SVID: %w", err)
		}
		if svid.ID != want {
			return fmt.Errorf("compare: workload SVID is %s, want %s", svid.ID, want)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range s.h.Sizes.Concurrency {
		tp, err := s.fetchConcurrently(ctx, ag, want, c)
		if err != nil {
			return err
		}
		m := s.r.Fetch[c]
		if m == nil {
			m = map[string]*Throughput{}
			s.r.Fetch[c] = m
		}
		if m[im.Name] == nil {
			m[im.Name] = &Throughput{}
		}
		m[im.Name].Merge(tp)
	}
	return nil
}

// fetchConcurrently makes WorkloadCalls new-connection fetches from c
// goroutines.
func (s *scenarioRun) fetchConcurrently(ctx context.Context, ag *agent, want spiffeid.ID, c int) (Throughput, error) {
	total := max(c, s.h.Sizes.WorkloadCalls/c*c)
	var (
		mu    sync.Mutex
		tp    Throughput
		first error
		wg    sync.WaitGroup
	)
	wall := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range total / c {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				start := time.Now()
				svid, err := workloadapi.FetchX509SVID(cctx, workloadapi.WithAddr(ag.addr()))
				d := time.Since(start)
				cancel()
				if err == nil && svid.ID != want {
					err = fmt.Errorf("compare: fetched %s, want %s", svid.ID, want)
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				tp.Calls.Add(d)
				n := len(tp.Calls.Samples)
				mu.Unlock()
				if err != nil {
					return
				}
				s.h.bar(fmt.Sprintf("%d callers", c), n, total)
			}
		}()
	}
	wg.Wait()
	tp.Wall, tp.Items = time.Since(wall), len(tp.Calls.Samples)
	return tp, first
}

// propagation (scenario 2) times entries from creation until every SVID
// is at the agent's Workload API.
func (s *scenarioRun) propagation(ctx context.Context, im Impl, _ int) error {
	fill, _, _, err := s.fill(ctx, im, s.h.Sizes.Entries, false)
	if err != nil {
		return err
	}
	d := s.r.Propagation[im.Name]
	if d == nil {
		d = &Dist{}
		s.r.Propagation[im.Name] = d
	}
	d.Add(fill)
	return nil
}

// cache (scenario 6) fills an agent's cache and reads its memory.
func (s *scenarioRun) cache(ctx context.Context, im Impl, _ int) error {
	n := s.h.Sizes.CacheEntries
	fill, ag, srv, err := s.fill(ctx, im, n, true)
	if err != nil {
		return err
	}
	defer srv.close()
	defer ag.proc.Stop()
	// Let the agent finish the update it just sent before reading.
	time.Sleep(time.Second)
	res := &CacheResult{Entries: n, Fill: fill}
	if res.AgentRSS, res.AgentPeak, err = rss(ag.proc.Pid()); err != nil {
		return err
	}
	if err := saveAgentHeap(ctx, im, "cache", ag.proc.Pid()); err != nil {
		return err
	}
	if res.ServerRSS, res.ServerPeak, err = rss(srv.proc.Pid()); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.h.Sizes.IdleSettle):
	}
	if res.AgentSettled, _, err = rss(ag.proc.Pid()); err != nil {
		return err
	}
	if err := saveAgentHeap(ctx, im, "cache-settled", ag.proc.Pid()); err != nil {
		return err
	}
	s.r.Cache[im.Name] = res
	return nil
}

// fill starts a server and agent, gives the harness one SVID, then
// creates n more entries for the harness and waits on one Workload API
// stream until all n+1 SVIDs arrive. The clock runs from the first
// BatchCreateEntry to the update that holds them all. With keep, the
// server and agent are returned running.
func (s *scenarioRun) fill(ctx context.Context, im Impl, n int, keep bool) (time.Duration, *agent, *server, error) {
	srv, err := startServer(ctx, s.g, s.root, im)
	if err != nil {
		return 0, nil, nil, err
	}
	ag, err := startAgent(ctx, s.g, s.root, im, srv)
	if err != nil {
		srv.close()
		return 0, nil, nil, err
	}
	cleanup := func() { ag.proc.Stop(); srv.close() }
	fill, err := s.fillAgent(ctx, srv, ag, n)
	if err != nil || !keep {
		cleanup()
		return fill, nil, nil, err
	}
	return fill, ag, srv, nil
}

func (s *scenarioRun) fillAgent(ctx context.Context, srv *server, ag *agent, n int) (time.Duration, error) {
	if _, err := srv.createEntries(ctx, ag.id, "/anchor", 1, nil); err != nil {
		return 0, err
	}
	// The raw stream, not go-spiffe's client: parsing 10,000 keys on
	// every update would compete with the agent for the CPU.
	conn, err := grpc.NewClient(ag.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return 0, fmt.Errorf("compare: workload API: %w", err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"))
	defer cancel()
	var stream workload.SpiffeWorkloadAPI_FetchX509SVIDClient
	err = poll(ctx, 60*time.Second, 100*time.Millisecond, "first workload SVID", func() error {
		st, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(sctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
		stream = st
		return nil
	})
	if err != nil {
		return 0, err
	}
	type update struct {
		resp *workload.X509SVIDResponse
		err  error
	}
	updates := make(chan update, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			select {
			case updates <- update{resp, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	start := time.Now()
	created := make(chan error, 1)
	go func() {
		_, err := srv.createEntries(sctx, ag.id, "/e", n, func(done int) { s.h.bar("entries created", done, n) })
		created <- err
	}()
	timeout := time.After(time.Duration(n)*100*time.Millisecond + 2*time.Minute)
	for {
		select {
		case err := <-created:
			if err != nil {
				return 0, err
			}
			created = nil
		case u := <-updates:
			if u.err != nil {
				return 0, fmt.Errorf("compare: workload stream: %w", u.err)
			}
			got := len(u.resp.Svids)
			s.h.bar("SVIDs at the agent", got, n+1)
			if got < n+1 {
				continue
			}
			fill := time.Since(start)
			last := u.resp.Svids[len(u.resp.Svids)-1]
			svid, err := x509svid.ParseRaw(last.X509Svid, last.X509SvidKey)
			if err != nil {
				return 0, fmt.Errorf("compare: workload SVID: %w", err)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, srv.bundle); err != nil {
				return 0, fmt.Errorf("compare: workload SVID: %w", err)
			}
			return fill, nil
		case <-timeout:
			return 0, errors.New("compare: timed out waiting for every SVID at the agent")
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
