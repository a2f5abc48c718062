package api

import (
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

// snapView is a snapshot decoded into maps, for comparisons.
type snapView struct {
	byParent, bySPIFFEID map[string][]string // entry IDs, in index order
	byID                 map[string]*types.Entry
}

func viewOf(s *entrySnapshot) snapView {
	v := snapView{byParent: map[string][]string{}, bySPIFFEID: map[string][]string{}, byID: map[string]*types.Entry{}}
	for k := range s.names {
		n := &s.names[k]
		for _, i := range s.byParent[n.parentAt:n.parentEnd] {
			v.byParent[s.name(int32(k))] = append(v.byParent[s.name(int32(k))], s.id(i))
		}
		for _, i := range s.bySPIFFE[n.idAt:n.idEnd] {
			v.bySPIFFEID[s.name(int32(k))] = append(v.bySPIFFEID[s.name(int32(k))], s.id(i))
		}
	}
	for i := range s.ents {
		e := s.entry(int32(i))
		v.byID[e.Id] = e
	}
	return v
}

func hasEntry(s *entrySnapshot, id string) bool {
	_, ok := s.find(id)
	return ok
}

// fullEntry sets every field of types.Entry, so that a field the snapshot
// drops shows.
func fullEntry(i int) *types.Entry {
	return &types.Entry{
		Id:             fmt.Sprintf("entry-%03d", i),
		SpiffeId:       &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d", i)},
		ParentId:       &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/spire/agent/%d", i%3)},
		Selectors:      []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}, {Type: "k8s", Value: "ns:default"}},
		X509SvidTtl:    int32(3600 + i),
		FederatesWith:  []string{"td1.org", fmt.Sprintf("td%d.org", i%4)},
		Admin:          i%2 == 0,
		Downstream:     i%3 == 0,
		ExpiresAt:      int64(1e9 + i),
		DnsNames:       []string{fmt.Sprintf("w%d.example.org", i), "shared.example.org"},
		RevisionNumber: int64(i*7 + 1),
		StoreSvid:      i%5 == 0,
		JwtSvidTtl:     int32(300 + i),
		Hint:           fmt.Sprintf("hint-%d", i),
		CreatedAt:      int64(1.7e9 + i),
	}
}

// TestSnapshotRoundTrip: every entry comes back from the snapshot as it
// went in, with every field types.Entry defines set.
func TestSnapshotRoundTrip(t *testing.T) {
	var in []*types.Entry
	for i := range 20 {
		in = append(in, fullEntry(i))
	}
	// Each field of the first entry must be set, or the test tests less
	// than it says.
	m := in[0].ProtoReflect()
	fields := m.Descriptor().Fields()
	for k := range fields.Len() {
		if !m.Has(fields.Get(k)) {
			t.Fatalf("fullEntry leaves %s unset", fields.Get(k).Name())
		}
	}
	shuffled := slices.Clone(in)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	s := newSnapshot(shuffled)
	if s.len() != len(in) {
		t.Fatalf("%d entries, want %d", s.len(), len(in))
	}
	for i, want := range in {
		if got := s.entry(int32(i)); !proto.Equal(got, want) {
			t.Fatalf("entry %d = %v, want %v", i, got, want)
		}
		got, ok := s.lookupEntry(want.Id)
		if !ok || !proto.Equal(got, want) {
			t.Fatalf("lookupEntry(%s) = %v, %v", want.Id, got, ok)
		}
		if e := &s.ents[i]; e.revision != want.RevisionNumber || e.createdAt != want.CreatedAt || e.admin != want.Admin {
			t.Fatalf("entry %d record: %+v", i, e)
		}
	}
	if _, ok := s.lookupEntry("entry-999"); ok {
		t.Fatal("found an entry never added")
	}
	if !s.isAdmin("spiffe://example.org/w/2") || s.isAdmin("spiffe://example.org/w/3") || s.isAdmin("spiffe://example.org/none") {
		t.Fatal("isAdmin does not follow the entries' admin flags")
	}
	// A copy made by patching nothing holds the same.
	p := s.patched(map[string]*types.Entry{})
	for i, want := range in {
		if got := p.entry(int32(i)); !proto.Equal(got, want) {
			t.Fatalf("patched entry %d = %v, want %v", i, got, want)
		}
	}
}

// TestSnapshotMasks: each mask, applied to the held encoding, gives what
// applyEntryMask gives on the message, for every single field and for
// random sets of them.
func TestSnapshotMasks(t *testing.T) {
	s := newSnapshot([]*types.Entry{fullEntry(1), fullEntry(2)})
	maskFieldsOf := (&types.EntryMask{}).ProtoReflect().Descriptor().Fields()
	masks := []*types.EntryMask{nil, {}}
	for k := range maskFieldsOf.Len() {
		m := &types.EntryMask{}
		m.ProtoReflect().Set(maskFieldsOf.Get(k), protoreflect.ValueOfBool(true))
		masks = append(masks, m)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 50 {
		m := &types.EntryMask{}
		for k := range maskFieldsOf.Len() {
			if rng.IntN(2) == 0 {
				m.ProtoReflect().Set(maskFieldsOf.Get(k), protoreflect.ValueOfBool(true))
			}
		}
		masks = append(masks, m)
	}
	for _, mask := range masks {
		for i := range int32(2) {
			// As the sync sends it: one entry in a response.
			b := s.appendEntry(nil, entrySyncEntries, i, maskFields(mask))
			var resp entryv1.SyncAuthorizedEntriesResponse
			if err := proto.Unmarshal(b, &resp); err != nil {
				t.Fatal(err)
			}
			want := applyEntryMask(s.entry(i), mask)
			if len(resp.Entries) != 1 || !proto.Equal(resp.Entries[0], want) {
				t.Fatalf("mask %v: %v, want %v", mask, resp.Entries, want)
			}
			// The encoding is the one proto.Marshal would make.
			enc, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if string(b[len(b)-len(enc):]) != string(enc) {
				t.Fatalf("mask %v: encoding differs from proto.Marshal's", mask)
			}
		}
	}
}

// walkReference is the walk the snapshot of protobuf messages made, kept
// as the reference the flat walk must agree with.
func walkReference(entries []*types.Entry, agentID, serverID string, nodeSelectors []*types.Selector) []string {
	byParent := map[string][]*types.Entry{}
	for _, e := range slices.SortedFunc(slices.Values(entries), compareEntryIDs) {
		byParent[protoIDString(e.ParentId)] = append(byParent[protoIDString(e.ParentId)], e)
	}
	have := make(map[string]struct{}, len(nodeSelectors))
	for _, sel := range nodeSelectors {
		have[sel.Type+":"+sel.Value] = struct{}{}
	}
	satisfied := func(required []*types.Selector) bool {
		if len(required) == 0 {
			return false
		}
		for _, sel := range required {
			if _, ok := have[sel.Type+":"+sel.Value]; !ok {
				return false
			}
		}
		return true
	}
	var out []string
	seen := map[string]struct{}{}
	queue := []string{agentID}
	visitedParent := map[string]struct{}{agentID: {}}
	add := func(e *types.Entry) {
		if _, ok := seen[e.Id]; ok {
			return
		}
		seen[e.Id] = struct{}{}
		out = append(out, e.Id)
		child := protoIDString(e.SpiffeId)
		if _, ok := visitedParent[child]; !ok {
			visitedParent[child] = struct{}{}
			queue = append(queue, child)
		}
	}
	for _, alias := range byParent[serverID] {
		if satisfied(alias.Selectors) {
			add(alias)
		}
	}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, e := range byParent[parent] {
			add(e)
		}
	}
	return out
}

// randomGraph makes entries over a few names, so that parents nest, form
// cycles, and node aliases (parented to the server) match some nodes'
// selectors.
func randomGraph(rng *rand.Rand, n int, first int) []*types.Entry {
	names := []string{"/spire/server", "/spire/agent/a", "/spire/agent/b", "/spire/agent/c", "/g1", "/g2", "/g3", "/w1", "/w2", "/w3", "/w4"}
	sels := []*types.Selector{{Type: "t", Value: "1"}, {Type: "t", Value: "2"}, {Type: "u", Value: "x"}, {Type: "u", Value: "y:z"}}
	id := func() *types.SPIFFEID {
		return &types.SPIFFEID{TrustDomain: "example.org", Path: names[rng.IntN(len(names))]}
	}
	var out []*types.Entry
	for i := range n {
		e := &types.Entry{Id: fmt.Sprintf("e%04d", first+i), SpiffeId: id(), ParentId: id(), RevisionNumber: rng.Int64N(5)}
		if rng.IntN(3) == 0 {
			e.ParentId = &types.SPIFFEID{TrustDomain: "example.org", Path: "/spire/server"}
		}
		for _, s := range sels {
			if rng.IntN(3) == 0 {
				e.Selectors = append(e.Selectors, s)
			}
		}
		out = append(out, e)
	}
	return out
}

func randomSelectors(rng *rand.Rand) []*types.Selector {
	all := []*types.Selector{{Type: "t", Value: "1"}, {Type: "t", Value: "2"}, {Type: "u", Value: "x"}, {Type: "u", Value: "y:z"}, {Type: "v", Value: "unknown"}}
	var out []*types.Selector
	for _, s := range all {
		if rng.IntN(2) == 0 {
			out = append(out, s)
		}
	}
	return out
}

// TestSnapshotWalkMatchesReference: on random entry graphs, with node
// aliases, nested parents and cycles, the flat walk returns what the
// walk over messages returned, in the same order, and the same after
// random patches.
func TestSnapshotWalkMatchesReference(t *testing.T) {
	const serverID = "spiffe://example.org/spire/server"
	agents := []string{"spiffe://example.org/spire/agent/a", "spiffe://example.org/spire/agent/b", "spiffe://example.org/spire/agent/c", "spiffe://example.org/spire/agent/none"}
	rng := rand.New(rand.NewPCG(7, 8))
	check := func(t *testing.T, s *entrySnapshot, entries []*types.Entry) {
		t.Helper()
		for _, agent := range agents {
			sels := randomSelectors(rng)
			want := walkReference(entries, agent, serverID, sels)
			var got []string
			for _, i := range s.walkAuthorized(agent, serverID, sels) {
				got = append(got, s.id(i))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s with %v: %v, want %v", agent, sels, got, want)
			}
		}
	}
	for round := range 200 {
		entries := randomGraph(rng, 1+rng.IntN(30), 0)
		s := newSnapshot(entries)
		check(t, s, entries)
		byID := map[string]*types.Entry{}
		for _, e := range entries {
			byID[e.Id] = e
		}
		// Patches in a row: changed, removed and added entries, so that
		// some patches extend the snapshot and others, once enough is
		// garbage, build it afresh.
		for step := range 8 {
			changes := map[string]*types.Entry{}
			for _, e := range randomGraph(rng, len(byID)+5, 0) {
				switch rng.IntN(4) {
				case 0: // changed, or added when beyond the old IDs
					changes[e.Id] = e
					byID[e.Id] = e
				case 1: // removed (or never there)
					changes[e.Id] = nil
					delete(byID, e.Id)
				}
			}
			s = s.patched(changes)
			after := slices.Collect(maps.Values(byID))
			check(t, s, after)
			sameSnapshotView(t, fmt.Sprintf("round %d, patch %d", round, step), s, newSnapshot(after))
		}
	}
}

// sameSnapshotView fails unless a and b hold the same entries under the
// same indexes.
func sameSnapshotView(t *testing.T, name string, a, b *entrySnapshot) {
	t.Helper()
	va, vb := viewOf(a), viewOf(b)
	for _, idx := range [][2]map[string][]string{{va.byParent, vb.byParent}, {va.bySPIFFEID, vb.bySPIFFEID}} {
		if len(idx[0]) != len(idx[1]) {
			t.Fatalf("%s: %d index keys, want %d", name, len(idx[0]), len(idx[1]))
		}
		for k, want := range idx[1] {
			if !slices.Equal(idx[0][k], want) {
				t.Fatalf("%s: index %s = %v, want %v", name, k, idx[0][k], want)
			}
		}
	}
	if len(va.byID) != len(vb.byID) {
		t.Fatalf("%s: %d entries, want %d", name, len(va.byID), len(vb.byID))
	}
	for id, e := range vb.byID {
		if !proto.Equal(va.byID[id], e) {
			t.Fatalf("%s: entry %s = %v, want %v", name, id, va.byID[id], e)
		}
	}
}

// TestSnapshotPatchKeepsIndexes: an entry moved to another parent and
// SPIFFE ID, one removed and one added leave every index right, and
// names no entry uses any more are gone from the lookups.
func TestSnapshotPatchKeepsIndexes(t *testing.T) {
	id := func(p string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: "example.org", Path: p} }
	s := newSnapshot([]*types.Entry{
		{Id: "a", ParentId: id("/p1"), SpiffeId: id("/w1"), RevisionNumber: 1},
		{Id: "b", ParentId: id("/p1"), SpiffeId: id("/w2"), Admin: true},
		{Id: "c", ParentId: id("/p2"), SpiffeId: id("/w2")},
	})
	p := s.patched(map[string]*types.Entry{
		"a": {Id: "a", ParentId: id("/p3"), SpiffeId: id("/w3"), RevisionNumber: 2},
		"b": nil,
		"0": {Id: "0", ParentId: id("/p2"), SpiffeId: id("/w1")},
	})
	v := viewOf(p)
	want := snapView{
		byParent:   map[string][]string{"spiffe://example.org/p2": {"0", "c"}, "spiffe://example.org/p3": {"a"}},
		bySPIFFEID: map[string][]string{"spiffe://example.org/w1": {"0"}, "spiffe://example.org/w2": {"c"}, "spiffe://example.org/w3": {"a"}},
	}
	for k, w := range want.byParent {
		if !slices.Equal(v.byParent[k], w) {
			t.Errorf("byParent[%s] = %v, want %v", k, v.byParent[k], w)
		}
	}
	for k, w := range want.bySPIFFEID {
		if !slices.Equal(v.bySPIFFEID[k], w) {
			t.Errorf("bySPIFFEID[%s] = %v, want %v", k, v.bySPIFFEID[k], w)
		}
	}
	if len(v.byParent) != len(want.byParent) || len(v.bySPIFFEID) != len(want.bySPIFFEID) {
		t.Errorf("indexes %v, %v", v.byParent, v.bySPIFFEID)
	}
	if got := p.withParent("spiffe://example.org/p1"); len(got) != 0 {
		t.Errorf("the emptied parent still lists %v", got)
	}
	if p.isAdmin("spiffe://example.org/w2") {
		t.Error("the deleted admin entry still makes its SPIFFE ID an admin")
	}
	if ids := []string{p.id(0), p.id(1), p.id(2)}; !slices.Equal(ids, []string{"0", "a", "c"}) || p.len() != 3 {
		t.Errorf("entries %v, want [0 a c]", ids)
	}
	if e, _ := p.lookupEntry("a"); e.RevisionNumber != 2 {
		t.Errorf("entry a at revision %d, want 2", e.RevisionNumber)
	}
	// The old snapshot is untouched.
	if e, _ := s.lookupEntry("a"); e.RevisionNumber != 1 || !s.isAdmin("spiffe://example.org/w2") {
		t.Error("patching changed the snapshot patched")
	}
}

// TestSnapshotLeavesOutUnencodable: an entry that does not encode (a hint
// that is not UTF-8, which only an edit of the database could store) is
// left out of a full build and of a patch, and logged, and every other
// entry is there.
func TestSnapshotLeavesOutUnencodable(t *testing.T) {
	var logs syncbuf.Buffer
	c := newEntryCache(nil, nil)
	c.log = slog.New(slog.NewTextHandler(&logs, nil))
	bad := fullEntry(1)
	bad.Hint = "\xff\xfe"
	s := c.logUnencodable(newSnapshot([]*types.Entry{fullEntry(0), bad, fullEntry(2)}))
	if s.len() != 2 {
		t.Fatalf("%d entries, want the 2 that encode", s.len())
	}
	if _, ok := s.lookupEntry(bad.Id); ok {
		t.Fatal("the entry that does not encode is in the snapshot")
	}
	worse := fullEntry(3)
	worse.Selectors[0].Value = "\xc3"
	p := c.logUnencodable(s.patched(map[string]*types.Entry{worse.Id: worse, fullEntry(4).Id: fullEntry(4)}))
	if _, ok := p.lookupEntry(worse.Id); ok || p.len() != 3 {
		t.Fatalf("patched snapshot of %d entries holds the one that does not encode: %v", p.len(), ok)
	}
	out := logs.String()
	for _, id := range []string{bad.Id, worse.Id} {
		if !strings.Contains(out, "entry_id="+id) {
			t.Errorf("%s not logged as left out:\n%s", id, out)
		}
	}
}

// TestFederatedOfCopies: the trust domain names federatedOf returns are
// copies, not slices of the arena, which a notice stream holding them
// would keep alive after the snapshot is replaced.
func TestFederatedOfCopies(t *testing.T) {
	s := newSnapshot([]*types.Entry{fullEntry(0), fullEntry(1)})
	arena := []string{s.base, s.tail}
	tds := s.federatedOf([]int32{0, 1}, spiffeid.RequireTrustDomainFromString("example.org"))
	if len(tds) == 0 {
		t.Fatal("no federated trust domain: the test tests nothing")
	}
	for _, td := range tds {
		p := uintptr(unsafe.Pointer(unsafe.StringData(td)))
		for _, a := range arena {
			if start := uintptr(unsafe.Pointer(unsafe.StringData(a))); len(a) > 0 && p >= start && p < start+uintptr(len(a)) {
				t.Fatalf("%q points into the snapshot's arena", td)
			}
		}
	}
}
