package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

// TestFleetSyncs attests three simulated agents against a real server,
// registers two entries for each and checks that every agent's sync loop
// signs exactly its own SVIDs and keeps reporting sync latencies.
func TestFleetSyncs(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	f := New(Server{Addr: srv.Addr, Bundle: srv.Bundle(t)}, 200*time.Millisecond)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []spiffeid.ID
	for range 3 {
		id, err := f.Add(ctx, srv.CreateToken(t))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var entries []*types.Entry
	for i, id := range ids {
		for j := range 2 {
			entries = append(entries, &types.Entry{
				ParentId:  &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
				SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d/%d", i, j)},
				Selectors: []*types.Selector{{Type: "unix", Value: "uid:0"}},
			})
		}
	}
	if _, err := entryv1.NewEntryClient(srv.Admin(t)).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries}); err != nil {
		t.Fatal(err)
	}
	for f.Held() < 6 {
		if ctx.Err() != nil {
			t.Fatalf("fleet holds %d SVIDs, want 6", f.Held())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if h := f.Held(); h != 6 {
		t.Errorf("fleet holds %d SVIDs, want 6", h)
	}
	lat, failed, err := f.Collect()
	if failed != 0 {
		t.Errorf("%d syncs failed, last: %v", failed, err)
	}
	// Three agents for over a second at 200 ms: at least a dozen syncs.
	if len(lat) < 12 {
		t.Errorf("%d syncs recorded, want at least 12", len(lat))
	}
	if lat2, _, _ := f.Collect(); len(lat2) > 3 {
		t.Errorf("Collect did not reset: %d syncs right after", len(lat2))
	}
}

// TestCollectWindow: a sync that started before Collect (say, one that a
// pause stretched) is not counted in the next window, success or failure;
// one that started after it is.
func TestCollectWindow(t *testing.T) {
	f := New(Server{}, time.Second)
	defer f.Close()
	before := time.Now()
	f.Collect()
	f.record(before, time.Second, nil)
	f.record(before, time.Second, errors.New("in flight"))
	f.record(time.Now(), time.Millisecond, nil)
	f.record(time.Now(), time.Millisecond, errors.New("refused"))
	lat, failed, err := f.Collect()
	if len(lat) != 1 || lat[0] != time.Millisecond {
		t.Errorf("latencies %v, want just the sync started in the window", lat)
	}
	if failed != 1 || err == nil || err.Error() != "refused" {
		t.Errorf("failed %d (%v), want the one failure of the window", failed, err)
	}
}

// TestAddRejected: a token the server never issued, or one already used,
// attests nothing and leaves the fleet unchanged.
func TestAddRejected(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	f := New(Server{Addr: srv.Addr, Bundle: srv.Bundle(t)}, time.Second)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	used := srv.CreateToken(t)
	if _, err := f.Add(ctx, used); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, token string }{
		{"unknown token", "not-a-token"},
		{"reused token", used},
	} {
		if _, err := f.Add(ctx, tc.token); err == nil {
			t.Errorf("%s: attested", tc.name)
		}
	}
	if f.Len() != 1 {
		t.Errorf("fleet has %d agents, want 1", f.Len())
	}
}

// createEntry registers one entry parented to agent and returns its ID.
func createEntry(ctx context.Context, t *testing.T, srv *servertest.Server, agent spiffeid.ID, path string) string {
	t.Helper()
	resp, err := entryv1.NewEntryClient(srv.Admin(t)).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
		ParentId:  &types.SPIFFEID{TrustDomain: agent.TrustDomain().Name(), Path: agent.Path()},
		SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: path},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:0"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results[0]
	if c := codes.Code(r.Status.GetCode()); c != codes.OK {
		t.Fatalf("create entry: %s: %s", c, r.Status.GetMessage())
	}
	return r.Entry.Id
}

// waitFor polls cond until it holds or ctx ends, and fails the test
// with what then.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pushPoll is the poll interval of the push tests: far longer than they
// wait, so that whatever reaches an agent came by notice.
const pushPoll = 10 * time.Minute

// TestPushSyncsAtOnce: with push on, an entry created for one agent
// reaches it by notice in a fraction of the poll interval, and the other
// agent, whose entries did not change, is told nothing.
func TestPushSyncsAtOnce(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	f := New(Server{Addr: srv.Addr, Bundle: srv.Bundle(t)}, pushPoll, WithPush())
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var ids []spiffeid.ID
	for range 2 {
		id, err := f.Add(ctx, srv.CreateToken(t))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Each Open starts a sync, after which the server watches for
	// changes that concern the agent.
	waitFor(ctx, t, "both streams open and synced", func() bool {
		synced, _ := f.SyncedSince(start)
		return f.PushStats().Open == 2 && synced == 2
	})
	before := f.PushStats()
	if before.Opened != 2 || before.NoticeSyncs < 2 {
		t.Fatalf("after two Opens: %+v", before)
	}
	created := time.Now()
	entry := createEntry(ctx, t, srv, ids[0], "/w/pushed")
	waitFor(ctx, t, "the pushed entry's SVID", func() bool { return f.Holds(ids[0], entry) })
	if d := time.Since(created); d > 5*time.Second {
		t.Errorf("entry reached its agent after %v, want well under the %v poll", d, pushPoll)
	}
	if f.Holds(ids[1], entry) || f.Held() != 1 {
		t.Errorf("fleet holds %d SVIDs, want just the one for %s", f.Held(), ids[0])
	}
	// Give a notice to the other agent, were one sent, time to arrive.
	time.Sleep(300 * time.Millisecond)
	after := f.PushStats()
	if n := after.Notices - before.Notices; n != 1 {
		t.Errorf("%d notices for one entry of one agent, want 1", n)
	}
	if n := after.NoticeSyncs - before.NoticeSyncs; n != 1 {
		t.Errorf("%d syncs started by notices, want 1", n)
	}
}

// cutter relays TCP connections to a target and can cut every one of
// them at once, which ends the notice streams on both sides.
type cutter struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{l: l, target: target}
	t.Cleanup(func() {
		l.Close()
		c.cut()
	})
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cutter) addr() string { return c.l.Addr().String() }

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// TestPushReopens: a stream whose connection is cut under it is reopened
// (after the backoff) and works: an entry created afterwards still comes
// by notice, long before the poll.
func TestPushReopens(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	relay := newCutter(t, srv.Addr)
	f := New(Server{Addr: relay.addr(), Bundle: srv.Bundle(t)}, pushPoll, WithPush())
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	id, err := f.Add(ctx, srv.CreateToken(t))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the stream open and synced", func() bool {
		synced, _ := f.SyncedSince(start)
		return f.PushStats().Open == 1 && synced == 1
	})
	cutAt := time.Now()
	relay.cut()
	waitFor(ctx, t, "the stream to end", func() bool { return f.PushStats().Open == 0 })
	waitFor(ctx, t, "the stream reopened", func() bool { return f.PushStats().Open == 1 })
	if st := f.PushStats(); st.Opened != 2 {
		t.Fatalf("after one cut: %+v, want 2 streams opened", st)
	}
	// The Open of the new stream starts a sync (the poll is far off);
	// the server watches for this agent's changes once it is served.
	waitFor(ctx, t, "a sync on the new stream", func() bool {
		synced, _ := f.SyncedSince(cutAt)
		return synced == 1
	})
	created := time.Now()
	entry := createEntry(ctx, t, srv, id, "/w/after-cut")
	waitFor(ctx, t, "the entry's SVID", func() bool { return f.Holds(id, entry) })
	if d := time.Since(created); d > 5*time.Second {
		t.Errorf("entry reached its agent after %v over the reopened stream, want well under the %v poll", d, pushPoll)
	}
}

// TestPushBackoff: the reopen delay grows from a second to its cap,
// never below half of each step, and is not the same for every agent.
func TestPushBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 6: 30 * time.Second, 50: 30 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 20 {
			d := reopenDelay(n)
			if d < want/2 || d > want {
				t.Fatalf("failure %d: wait %v, want in [%v, %v]", n, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("failure %d: every wait %v, want jitter", n, seen)
		}
	}
}
