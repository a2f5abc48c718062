package api_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// masked is e with only the fields mask names (and the ID), as SPIRE
// defines output masks; nil keeps everything.
func masked(e *types.Entry, mask *types.EntryMask) *types.Entry {
	out := proto.Clone(e).(*types.Entry)
	if mask == nil {
		return out
	}
	m, mr := out.ProtoReflect(), mask.ProtoReflect()
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.Name() == "id" {
			return true
		}
		if mf := mr.Descriptor().Fields().ByName(fd.Name()); mf == nil || !mr.Get(mf).Bool() {
			m.Clear(fd)
		}
		return true
	})
	return out
}

// syncAll runs SyncAuthorizedEntries with mask to its end, asking for
// every entry when the server sends revisions, and returns the entries
// by ID.
func syncAll(ctx context.Context, t testing.TB, client entryv1.EntryClient, mask *types.EntryMask) map[string]*types.Entry {
	stream, err := client.SyncAuthorizedEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{OutputMask: mask}); err != nil {
		t.Fatal(err)
	}
	got := map[string]*types.Entry{}
	var revs []string
	recv := func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range r.Entries {
				got[e.Id] = e
			}
			for _, rev := range r.EntryRevisions {
				revs = append(revs, rev.Id)
			}
			if !r.More {
				return
			}
		}
	}
	recv()
	if len(revs) > 0 {
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: revs}); err != nil {
			t.Fatal(err)
		}
		recv()
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the sync: %v, want EOF", err)
	}
	return got
}

// TestSyncAuthorizedEntriesMasks: the sync, which sends entries from their
// held encodings, serves every entry as created, whole or masked, in one
// response and in pages, and GetAuthorizedEntries the same.
func TestSyncAuthorizedEntriesMasks(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	a := s.NewAgent(t)
	admin := entryv1.NewEntryClient(s.Admin(t))
	create := func(n int, prefix string) map[string]*types.Entry {
		var in []*types.Entry
		for i := range n {
			in = append(in, &types.Entry{
				SpiffeId: pid("/" + prefix + "/" + itoa(i)), ParentId: idOf(a.ID),
				Selectors:   []*types.Selector{{Type: "unix", Value: "uid:" + itoa(i)}, {Type: "unix", Value: "gid:7"}},
				X509SvidTtl: int32(600 + i), JwtSvidTtl: int32(60 + i), FederatesWith: []string{"spiffe://other.org"},
				Admin: i%2 == 0, Downstream: i%3 == 0, ExpiresAt: 4102444800, DnsNames: []string{prefix + itoa(i) + ".example.org"},
				StoreSvid: i%4 == 0, Hint: "hint-" + itoa(i),
			})
		}
		want := map[string]*types.Entry{}
		for chunk := range slices.Chunk(in, 50) {
			resp, err := admin.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: chunk})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.Results {
				if codes.Code(r.Status.Code) != codes.OK {
					t.Fatal(r.Status)
				}
				want[r.Entry.Id] = r.Entry
			}
		}
		return want
	}
	if _, err := admin.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
		SpiffeId: pid("/elsewhere"), ParentId: pid("/spire/agent/other"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}},
	}}}); err != nil {
		t.Fatal(err)
	}
	masks := []*types.EntryMask{
		nil, {}, {SpiffeId: true, Selectors: true, RevisionNumber: true, CreatedAt: true},
		{ParentId: true, X509SvidTtl: true, JwtSvidTtl: true, FederatesWith: true, Admin: true, Downstream: true},
		{ExpiresAt: true, DnsNames: true, StoreSvid: true, Hint: true},
	}
	check := func(name string, want map[string]*types.Entry) {
		t.Helper()
		for _, mask := range masks {
			got := syncAll(ctx, t, entryv1.NewEntryClient(a.Conn), mask)
			if len(got) != len(want) {
				t.Fatalf("%s, mask %v: %d entries, want %d", name, mask, len(got), len(want))
			}
			for id, e := range want {
				if w := masked(e, mask); !proto.Equal(got[id], w) {
					t.Fatalf("%s, mask %v: entry %s = %v, want %v", name, mask, id, got[id], w)
				}
			}
			resp, err := entryv1.NewEntryClient(a.Conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{OutputMask: mask})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Entries) != len(want) {
				t.Fatalf("%s, GetAuthorizedEntries with mask %v: %d entries, want %d", name, mask, len(resp.Entries), len(want))
			}
			for _, e := range resp.Entries {
				if w := masked(want[e.Id], mask); !proto.Equal(e, w) {
					t.Fatalf("%s, GetAuthorizedEntries with mask %v: %v, want %v", name, mask, e, w)
				}
			}
		}
	}
	want := create(5, "small")
	check("one response", want)
	for id, e := range create(600, "large") { // past the page size: revisions first
		want[id] = e
	}
	check("pages", want)
}

// BenchmarkSyncAuthorizedEntries is one agent's sync of its 10 entries
// over its mTLS connection, with the fleet simulator's mask, in a server
// holding 2,000 agents' entries.
func BenchmarkSyncAuthorizedEntries(b *testing.B) {
	s := servertest.Start(b, servertest.Options{})
	ctx := context.Background()
	a := s.NewAgent(b)
	admin := entryv1.NewEntryClient(s.Admin(b))
	var batch []*types.Entry
	for agent := range 2000 {
		parent := pid("/spire/agent/join_token/bench-" + itoa(agent))
		if agent == 0 {
			parent = idOf(a.ID)
		}
		for k := range 10 {
			batch = append(batch, &types.Entry{
				SpiffeId: pid("/fleet/" + itoa(agent) + "/w" + itoa(k)), ParentId: parent,
				Selectors: []*types.Selector{{Type: "unix", Value: "uid:" + itoa(1000+k)}, {Type: "unix", Value: "gid:1000"}},
			})
		}
		if len(batch) >= 50 {
			if _, err := admin.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: batch}); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	mask := &types.EntryMask{SpiffeId: true, Selectors: true, RevisionNumber: true, CreatedAt: true}
	client := entryv1.NewEntryClient(a.Conn)
	if got := syncAll(ctx, b, client, mask); len(got) != 10 {
		b.Fatalf("%d entries, want 10", len(got))
	}
	for b.Loop() {
		syncAll(ctx, b, client, mask)
	}
}
