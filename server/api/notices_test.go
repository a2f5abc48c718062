package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/wire/push"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// notices reads a stream's notices onto a channel.
func notices(t *testing.T, st *push.Stream) (<-chan push.Change, <-chan error) {
	t.Helper()
	ch, errc := make(chan push.Change, 64), make(chan error, 1)
	go func() {
		for {
			c, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			ch <- c
		}
	}()
	return ch, errc
}

// openNotices subscribes conn's agent and reads the stream's Open.
func openNotices(t *testing.T, ctx context.Context, conn *grpc.ClientConn) (<-chan push.Change, <-chan error) {
	t.Helper()
	st, err := push.Subscribe(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	ch, errc := notices(t, st)
	if c := nextNotice(t, ch, errc); c != push.Open {
		t.Fatalf("first notice %v, want open", c)
	}
	return ch, errc
}

func nextNotice(t *testing.T, ch <-chan push.Change, errc <-chan error) push.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case err := <-errc:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no notice within 5 s")
	}
	return 0
}

// noNotice asserts that no notice arrives for a while: long enough for
// the feed's debounce and a wave, much shorter than its periodic look.
func noNotice(t *testing.T, ch <-chan push.Change) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected notice %v", c)
	case <-time.After(300 * time.Millisecond):
	}
}

// syncAgent does what an agent does after a notice: fetch its entries and
// the bundle, which the server records as served.
func syncAgent(t *testing.T, a *servertest.Agent) []*types.Entry {
	t.Helper()
	ctx := context.Background()
	resp, err := entryv1.NewEntryClient(a.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundlev1.NewBundleClient(a.Conn).GetBundle(ctx, &bundlev1.GetBundleRequest{}); err != nil {
		t.Fatal(err)
	}
	return resp.Entries
}

func TestNotices(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, other := s.NewAgent(t), s.NewAgent(t)
	admin := s.Admin(t)

	ch, errc := openNotices(t, ctx, a.Conn)
	syncAgent(t, a)
	och, oerrc := openNotices(t, ctx, other.Conn)
	syncAgent(t, other)

	// An entry for a: a is told, other is not.
	e := createEntry(t, admin, &types.Entry{ParentId: idOf(a.ID), SpiffeId: pid("/w1"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}})
	if c := nextNotice(t, ch, errc); c != push.Entries {
		t.Fatalf("notice %v, want entries", c)
	}
	noNotice(t, och)
	// Coalesced: a second change before a syncs is no second notice of
	// the same state, but a new state is.
	createEntry(t, admin, &types.Entry{ParentId: idOf(a.ID), SpiffeId: pid("/w2"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:2"}}})
	if c := nextNotice(t, ch, errc); c != push.Entries {
		t.Fatalf("notice %v, want entries", c)
	}
	if got := syncAgent(t, a); len(got) != 2 {
		t.Fatalf("synced %d entries, want 2", len(got))
	}
	noNotice(t, ch)

	// A deleted entry is a change too.
	if _, err := entryv1.NewEntryClient(admin).BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: []string{e.Id}}); err != nil {
		t.Fatal(err)
	}
	if c := nextNotice(t, ch, errc); c != push.Entries {
		t.Fatalf("notice %v, want entries", c)
	}
	syncAgent(t, a)

	// A prepared X.509 authority joins the bundle: both agents are told.
	if _, err := localauthorityv1.NewLocalAuthorityClient(admin).PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}); err != nil {
		t.Fatal(err)
	}
	if c := nextNotice(t, ch, errc); c != push.Bundle {
		t.Fatalf("notice %v, want bundle", c)
	}
	if c := nextNotice(t, och, oerrc); c != push.Bundle {
		t.Fatalf("other's notice %v, want bundle", c)
	}

	// Banning ends the banned agent's stream with SPIRE's reason.
	if _, err := agentv1.NewAgentClient(admin).BanAgent(ctx, &agentv1.BanAgentRequest{Id: idOf(other.ID)}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-oerrc:
		wantCode(t, err, codes.PermissionDenied)
		if r := deniedReason(err); r != types.PermissionDeniedDetails_AGENT_BANNED {
			t.Fatalf("reason %v, want AGENT_BANNED", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("banned agent's stream still open")
	}
}

func TestNoticesRefused(t *testing.T) {
	logs := &syncbuf.Buffer{}
	s := servertest.Start(t, servertest.Options{Log: logs})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := s.NewAgent(t)

	// Only an attested agent: no SVID, and the admin socket, are refused.
	for _, conn := range []struct {
		name string
		st   func() (*push.Stream, error)
	}{
		{"no SVID", func() (*push.Stream, error) { return push.Subscribe(ctx, s.Dial(t, nil)) }},
		{"admin socket", func() (*push.Stream, error) { return push.Subscribe(ctx, s.Admin(t)) }},
	} {
		st, err := conn.st()
		if err == nil {
			_, err = st.Recv()
		}
		if err == nil {
			t.Fatalf("%s: subscribed", conn.name)
		}
		wantCode(t, err, codes.PermissionDenied)
	}

	// One stream per agent: a flood of extra ones is refused, the first
	// keeps working.
	st, err := push.Subscribe(ctx, a.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ch, errc := notices(t, st)
	nextNotice(t, ch, errc)
	const flood = 50
	for range flood {
		extra, err := push.Subscribe(ctx, a.Conn)
		if err == nil {
			_, err = extra.Recv()
		}
		wantCode(t, err, codes.ResourceExhausted)
	}
	syncAgent(t, a)
	createEntry(t, s.Admin(t), &types.Entry{ParentId: idOf(a.ID), SpiffeId: pid("/w"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}})
	if c := nextNotice(t, ch, errc); c != push.Entries {
		t.Fatalf("notice %v, want entries", c)
	}
	if !strings.Contains(logs.String(), "Notice stream refused: one per agent") {
		t.Errorf("no log line for the refused streams:\n%s", logs.String())
	}
}

// An agent that never syncs gets a bounded number of notices, then its
// stream is ended.
func TestNoticesUnsyncedAgentCut(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := s.NewAgent(t)
	admin := s.Admin(t)
	st, err := push.Subscribe(ctx, a.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ch, errc := notices(t, st)
	nextNotice(t, ch, errc)
	// One sync after Open, as an agent does, and never again.
	syncAgent(t, a)
	got := 0
	for i := 0; ; i++ {
		createEntry(t, admin, &types.Entry{ParentId: idOf(a.ID), SpiffeId: pid("/w" + itoa(i)), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}})
		select {
		case <-ch:
			got++
			continue
		case err := <-errc:
			wantCode(t, err, codes.ResourceExhausted)
		case <-ctx.Done():
			t.Fatal("stream never ended")
		}
		break
	}
	if got == 0 || got > 16 {
		t.Fatalf("%d notices before the stream ended, want 1..16", got)
	}
}

// An agent part way through its first sync (entries fetched, bundle not
// yet) is not told that the bundle changed when a wave comes in between:
// it fetches the bundle next anyway. A change to its own entries still
// reaches it.
func TestNoticesMidFirstSync(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, other := s.NewAgent(t), s.NewAgent(t)
	admin := s.Admin(t)
	ch, errc := openNotices(t, ctx, a.Conn)
	if _, err := entryv1.NewEntryClient(a.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	// A wave that changes nothing for a.
	createEntry(t, admin, &types.Entry{ParentId: idOf(other.ID), SpiffeId: pid("/o"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:9"}}})
	noNotice(t, ch)
	createEntry(t, admin, &types.Entry{ParentId: idOf(a.ID), SpiffeId: pid("/a"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}})
	if c := nextNotice(t, ch, errc); c != push.Entries {
		t.Fatalf("notice %v, want entries only", c)
	}
}
