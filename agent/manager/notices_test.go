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
	ca := newTestCA(t)
	notices := newFakeNotices()
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1", notices: notices,
		entries: []*types.Entry{workloadEntry("web", 1, "uid:1000")}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
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
	ca := newTestCA(t)
	notices := newFakeNotices()
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "tok-1", notices: notices,
		entries: []*types.Entry{workloadEntry("web", 1, "uid:1000")}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	m := newManager(t, agentSetup{dir: t.TempDir(), addr: addr, token: "tok-1", ca: ca}, false)
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
