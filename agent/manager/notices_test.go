package manager

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeNotices is the notice stream of fakeServer: the test sends what it
// pushes, or ends the stream.
type fakeNotices struct {
	srv    *fakeServer
	send   chan push.Change
	end    chan error
	opened chan struct{}
}

func newFakeNotices() *fakeNotices {
	return &fakeNotices{send: make(chan push.Change), end: make(chan error, 1), opened: make(chan struct{}, 8)}
}

func (n *fakeNotices) Subscribe(stream grpc.ServerStream) error {
	ctx := stream.Context()
	if _, err := n.srv.agentID(ctx); err != nil {
		return err
	}
	if err := stream.SendMsg(push.Notice(push.Open)); err != nil {
		return err
	}
	n.opened <- struct{}{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-n.end:
			return err
		case c := <-n.send:
			if err := stream.SendMsg(push.Notice(c)); err != nil {
				return err
			}
		}
	}
}

func (s *fakeServer) syncCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncs
}

func (s *fakeServer) addEntry(e *types.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, e)
}

// awaitIdentity waits for an update of sub holding entry id's SVID.
func awaitIdentity(sub cache.Subscription, id string, within time.Duration) bool {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case u := <-sub.Updates():
			if ids := identityIDs(u); len(ids) == 1 && ids[0] == id {
				return true
			}
		case <-t.C:
			return false
		}
	}
}

// newNoticeAgent returns a server with a notice stream and one entry, and
// an agent (not yet running) set up against it.
func newNoticeAgent(t *testing.T) (*fakeServer, *fakeNotices, *Manager) {
	t.Helper()
	ca := newTestCA(t)
	notices := newFakeNotices()
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1", notices: notices,
		entries: []*types.Entry{workloadEntry("web", 1, "uid:1000")}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	return srv, notices, newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
}

func waitOpened(t *testing.T, n *fakeNotices) {
	t.Helper()
	select {
	case <-n.opened:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not open its notice stream")
	}
}

// A notice makes the agent sync at once, long before its poll; a burst of
// notices is one sync, not one each.
func TestNoticeSyncsAtOnce(t *testing.T) {
	srv, notices, m := newNoticeAgent(t)
	m.cfg.SyncInterval = time.Hour
	sub, _ := m.SubscribeToCacheChanges(context.Background(), selectors("uid:2000"))
	defer sub.Finish()
	<-sub.Updates()
	run(t, m)
	waitOpened(t, notices)
	// The Open notice syncs once more; wait for it to settle.
	waitFor(t, "the sync after the stream opened", func() bool { return srv.syncCount() >= 2 })
	time.Sleep(2 * noticeDebounce)
	before := srv.syncCount()

	srv.addEntry(workloadEntry("db", 1, "uid:2000"))
	for range 50 {
		notices.send <- push.Entries
	}
	if !awaitIdentity(sub, "db", 5*time.Second) {
		t.Fatal("no SVID for the new entry within 5 s of the notice (poll interval 1 h)")
	}
	// The run loop may have been syncing when the burst started: at most
	// that sync and one for the burst.
	time.Sleep(2 * noticeDebounce)
	if n := srv.syncCount() - before; n < 1 || n > 2 {
		t.Fatalf("%d syncs for a burst of 50 notices, want 1 or 2", n)
	}
}

// A server without the service is polled, and the agent says so.
func TestNoticesUnsupportedPolls(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1"}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	logs := &syncbuf.Buffer{}
	log, err := logging.NewWriter(logs, logging.NewLevel(-4), "text")
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
	m.log = log
	sub, _ := m.SubscribeToCacheChanges(context.Background(), selectors("uid:2000"))
	defer sub.Finish()
	<-sub.Updates()
	run(t, m)
	waitFor(t, "the fallback log line", func() bool {
		return strings.Contains(logs.String(), "Server does not offer change notices; polling every sync interval")
	})
	srv.addEntry(workloadEntry("db", 1, "uid:2000"))
	if !awaitIdentity(sub, "db", 10*time.Second) {
		t.Fatal("the poll did not bring the new entry")
	}
}

// A stream the server ends for the agent's identity (banned) makes the
// agent sync at once, which finds the ban: it stops without waiting for
// its poll.
func TestNoticeStreamDeniedSyncsAtOnce(t *testing.T) {
	ca := newTestCA(t)
	notices := newFakeNotices()
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1", notices: notices}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
	m.cfg.SyncInterval = time.Hour
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- m.Run(ctx) }()
	waitOpened(t, notices)
	srv.mu.Lock()
	srv.denyAgent = true
	srv.mu.Unlock()
	notices.end <- status.Error(codes.PermissionDenied, "agent is banned")
	select {
	case err := <-done:
		if !isFatal(err) {
			t.Fatalf("Run = %v, want an eviction", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not act on the ended stream")
	}
}

// With DisableNotices (the agent's change_notices = false) the stream is
// never opened: the agent polls, and a notice-capable server sees no
// subscriber.
func TestNoticesDisabled(t *testing.T) {
	srv, notices, m := newNoticeAgent(t)
	m.cfg.DisableNotices = true
	run(t, m)
	// newManager polls every 100 ms: by the third sync a stream would
	// have been opened after the first.
	waitFor(t, "three syncs", func() bool { return srv.syncCount() >= 3 })
	select {
	case <-notices.opened:
		t.Fatal("the notice stream was opened with notices disabled")
	default:
	}
}

// syncRounds returns when each of srv's sync rounds began: its entry
// fetches, those less than 100 ms apart taken as one round.
func (s *fakeServer) syncRounds() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, at := range s.syncAt {
		if len(out) == 0 || at.Sub(out[len(out)-1]) >= 100*time.Millisecond {
			out = append(out, at)
		}
	}
	return out
}

// A sync that a notice brings forward leaves the poll where it was: the
// agents one change reaches (every agent, for a bundle change) must not
// poll in step from then on.
func TestNoticeKeepsPollPhase(t *testing.T) {
	const interval = 2 * time.Second
	srv, notices, m := newNoticeAgent(t)
	m.cfg.SyncInterval = interval
	run(t, m)
	waitOpened(t, notices)
	// A poll after the stream's own sync: the phase to keep.
	n := len(srv.syncRounds())
	var poll time.Time
	waitFor(t, "a poll", func() bool {
		r := srv.syncRounds()
		if len(r) > n && time.Since(r[len(r)-1]) < interval/2 {
			poll = r[len(r)-1]
			return true
		}
		return false
	})
	// Near the middle of the interval, a notice.
	time.Sleep(time.Until(poll.Add(interval * 45 / 100)))
	n = len(srv.syncRounds())
	notices.send <- push.Entries
	waitFor(t, "the notice's sync", func() bool { return len(srv.syncRounds()) > n })
	waitFor(t, "the poll after it", func() bool { return len(srv.syncRounds()) > n+1 })
	r := srv.syncRounds()
	next := r[n+1].Sub(poll)
	// On the poll's own schedule (interval after the last poll), not an
	// interval after the notice's sync (about 1.45 intervals).
	if next < interval*8/10 || next > interval*12/10 {
		t.Fatalf("poll %v after the previous one, with a notice between; want about %v", next, interval)
	}
}

func TestNextPoll(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		due, now, want time.Duration // from t0
	}{
		{due: 5 * time.Second, now: 1 * time.Second, want: 5 * time.Second},         // well ahead: kept
		{due: 5 * time.Second, now: 3 * time.Second, want: 10 * time.Second},        // under half an interval: the next one
		{due: 5 * time.Second, now: 2500 * time.Millisecond, want: 5 * time.Second}, // exactly half: kept
		{due: 5 * time.Second, now: 17 * time.Second, want: 20 * time.Second},       // long past: the grid goes on
	} {
		if got := nextPoll(t0.Add(tc.due), t0.Add(tc.now), 5*time.Second).Sub(t0); got != tc.want {
			t.Errorf("nextPoll(due %v, now %v) = %v, want %v", tc.due, tc.now, got, tc.want)
		}
	}
}
