package api

import (
	"context"
	"crypto/x509"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// noticeStream is the server end of a notice stream, without a network.
type noticeStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan push.Change
}

func (s *noticeStream) Context() context.Context { return s.ctx }

func (s *noticeStream) SendMsg(m any) error {
	c, err := push.ParseNotice(m.(*wrapperspb.UInt32Value))
	if err != nil {
		return err
	}
	s.sent <- c
	return nil
}

func expectNotice(t *testing.T, sent <-chan push.Change, want push.Change, within time.Duration) {
	t.Helper()
	select {
	case c := <-sent:
		if c != want {
			t.Fatalf("notice %v, want %v", c, want)
		}
	case <-time.After(within):
		t.Fatalf("no %v notice within %v", want, within)
	}
}

// TestNoticesSeeChangesElsewhere: entries and bundle written straight to
// the database, as another server sharing it writes them, reach the
// stream through the feed's periodic look; an expired SVID ends it.
func TestNoticesSeeChangesElsewhere(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := sqlitetest.Open(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a := New(Config{TrustDomain: td, DataStore: st, Log: slog.New(slog.DiscardHandler)})
	id := spiffeid.RequireFromPath(td, "/spire/agent/join_token/n1")
	node := &datastore.AttestedNode{SPIFFEID: id.String(), AttestationType: "join_token", CertSerial: "10", CertNotAfter: time.Now().Add(time.Hour).Unix()}
	if err := st.CreateAttestedNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateBundle(ctx, &types.Bundle{TrustDomain: td.Name(), SequenceNumber: 1}); err != nil {
		t.Fatal(err)
	}
	caller := &Caller{Role: RoleAgent, ID: id, Node: node,
		Cert: &x509.Certificate{SerialNumber: big.NewInt(10), NotAfter: time.Now().Add(time.Hour)}}
	sctx, stop := context.WithCancel(ctx)
	stream := &noticeStream{ctx: context.WithValue(sctx, callerKey{}, caller), sent: make(chan push.Change, 16)}
	done := make(chan error, 1)
	go func() { done <- (&NoticeService{api: a}).Subscribe(stream) }()
	expectNotice(t, stream.sent, push.Open, 5*time.Second)

	// Served once, as the agent's sync after Open.
	if _, _, err := a.syncedEntries(context.WithValue(ctx, callerKey{}, caller), caller); err != nil {
		t.Fatal(err)
	}
	_, ver, err := a.bundle.getVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.notices.servedBundle(id.String(), ver)

	if _, err := st.CreateEntry(ctx, &types.Entry{ParentId: &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
		SpiffeId: &types.SPIFFEID{TrustDomain: td.Name(), Path: "/w"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}}); err != nil {
		t.Fatal(err)
	}
	// One look a second, and the entry cache's revision check a second.
	expectNotice(t, stream.sent, push.Entries, 4*time.Second)
	if _, err := st.AppendBundle(ctx, &types.Bundle{TrustDomain: td.Name(), JwtAuthorities: []*types.JWTKey{{KeyId: "k", PublicKey: []byte("x"), ExpiresAt: time.Now().Add(time.Hour).Unix()}}}); err != nil {
		t.Fatal(err)
	}
	expectNotice(t, stream.sent, push.Bundle, 4*time.Second)

	stop()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("stream ended with %v, want Canceled", err)
	}

	// An SVID that expires ends its stream.
	caller.Cert = &x509.Certificate{SerialNumber: big.NewInt(10), NotAfter: time.Now().Add(300 * time.Millisecond)}
	stream = &noticeStream{ctx: context.WithValue(ctx, callerKey{}, caller), sent: make(chan push.Change, 16)}
	go func() { done <- (&NoticeService{api: a}).Subscribe(stream) }()
	expectNotice(t, stream.sent, push.Open, 5*time.Second)
	select {
	case err := <-done:
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("stream ended with %v, want Unauthenticated for the expired SVID", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream outlived its SVID")
	}
	// The last subscriber gone, the feed stops.
	a.notices.mu.Lock()
	running := a.notices.stopFeed != nil
	a.notices.mu.Unlock()
	if running {
		t.Fatal("feed still running without subscribers")
	}
}
