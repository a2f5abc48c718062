package api

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// entrySnapshot holds every entry flat: each entry's wire encoding and
// every name in one string arena, and fixed-size records with interned
// integer names in place of pointers. At fleet scale the
// snapshot held a protobuf message per entry (with its SPIFFE ID, parent
// and selector messages and strings, about 15 objects an entry), which
// the collector walked at every cycle; this way the snapshot is a handful
// of pointer-free arrays whatever its size, and an entry is served from
// its encoding without decoding it.
type entrySnapshot struct {
	// base and tail hold the entries' encodings and the names, at
	// offsets counted from the start of base and on into tail. An
	// entry's ID is read from its encoding, where it comes first. A
	// patch shares base with the snapshot it patches and copies only
	// tail, with its own additions, so that a small change does not copy
	// every entry's bytes.
	base, tail string
	ents       []flatEntry // in entry ID order
	names      []flatName  // interned SPIFFE IDs, selector types and values, trust domains
	// slots is an open-addressed hash of names by their string: a name's
	// index plus one, 0 for a free slot.
	slots []int32
	seed  maphash.Seed
	// refs holds the entries' lists: two names per selector (type,
	// value), one per federated trust domain.
	refs []int32
	// byParent and bySPIFFE are entry indexes grouped by the name of
	// their parent and SPIFFE ID (each name's range is in flatName), in
	// ID order within a group.
	byParent []int32
	bySPIFFE []int32
	// garbage counts the bytes of strs and refs that patches left
	// behind (entries replaced or deleted since the last full build).
	garbage int
	// unencodable are the entries this build left out because they do
	// not encode, for the cache to log.
	unencodable []unencodableEntry

	// authorized remembers authorizedFor per agent ID. Every agent asks
	// at every sync, and the answer changes only with the snapshot (a
	// new one starts empty) or the node's selectors (checked on each
	// use): at fleet scale the walk and its maps were a tenth of the
	// server's CPU. Written once per agent and then read, so a sync.Map;
	// it holds at most one memo per agent that synced.
	authorized sync.Map // agent ID -> *authorizedMemo
}

// unencodableEntry is an entry a snapshot left out, and why.
type unencodableEntry struct {
	id  string
	err error
}

type flatName struct {
	at, n               uint32 // in strs
	parentAt, parentEnd uint32 // in byParent
	idAt, idEnd         uint32 // in bySPIFFE
}

type flatEntry struct {
	wireAt, wireLen     uint32 // the encoding, in strs
	idAt, idLen         uint32 // in strs, within the encoding
	spiffe, parent      int32  // names
	selAt, selN         uint32 // selectors, at refs[selAt:selAt+2*selN]
	fedAt, fedN         uint32 // federated trust domains, in refs
	revision, createdAt int64
	admin               bool
}

// Field numbers the snapshot writes and reads in encodings.
const (
	entryIDField     = 1 // types.Entry.id
	entrySyncEntries = 2 // SyncAuthorizedEntriesResponse.entries
	entrySyncMore    = 3 // SyncAuthorizedEntriesResponse.more
)

func (s *entrySnapshot) len() int { return len(s.ents) }

// str returns the n bytes at offset at.
func (s *entrySnapshot) str(at, n uint32) string {
	if b := uint32(len(s.base)); at >= b {
		return s.tail[at-b : at-b+n]
	}
	return s.base[at : at+n]
}

func (s *entrySnapshot) name(i int32) string {
	n := &s.names[i]
	return s.str(n.at, n.n)
}

func (s *entrySnapshot) id(i int32) string {
	e := &s.ents[i]
	return s.str(e.idAt, e.idLen)
}

func (s *entrySnapshot) encoding(i int32) string {
	e := &s.ents[i]
	return s.str(e.wireAt, e.wireLen)
}

// size is the bytes the snapshot's strings and lists take.
func (s *entrySnapshot) size() int { return len(s.base) + len(s.tail) + 4*len(s.refs) }

// entry decodes entry i, for the callers that need its message (SVID
// signing reads its TTLs and DNS names).
func (s *entrySnapshot) entry(i int32) *types.Entry {
	e := new(types.Entry)
	if err := proto.Unmarshal([]byte(s.encoding(i)), e); err != nil {
		// The snapshot encoded it itself.
		panic("api: entry snapshot holds an undecodable entry: " + err.Error())
	}
	return e
}

// find returns the index of the entry with this ID.
func (s *entrySnapshot) find(id string) (int32, bool) {
	i, ok := slices.BinarySearchFunc(s.ents, id, func(e flatEntry, id string) int {
		return strings.Compare(s.str(e.idAt, e.idLen), id)
	})
	return int32(i), ok
}

// lookupEntry returns the entry with this ID, decoded.
func (s *entrySnapshot) lookupEntry(id string) (*types.Entry, bool) {
	i, ok := s.find(id)
	if !ok {
		return nil, false
	}
	return s.entry(i), true
}

// lookup returns the index of a name, if any entry uses it.
func (s *entrySnapshot) lookup(name string) (int32, bool) {
	if len(s.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(s.slots) - 1)
	for h := maphash.String(s.seed, name) & mask; ; h = (h + 1) & mask {
		k := s.slots[h]
		if k == 0 {
			return 0, false
		}
		if s.name(k-1) == name {
			return k - 1, true
		}
	}
}

func (s *entrySnapshot) withParent(name string) []int32 {
	k, ok := s.lookup(name)
	if !ok {
		return nil
	}
	n := &s.names[k]
	return s.byParent[n.parentAt:n.parentEnd]
}

func (s *entrySnapshot) withSPIFFEID(name string) []int32 {
	k, ok := s.lookup(name)
	if !ok {
		return nil
	}
	n := &s.names[k]
	return s.bySPIFFE[n.idAt:n.idEnd]
}

func (s *entrySnapshot) isAdmin(id string) bool {
	for _, i := range s.withSPIFFEID(id) {
		if s.ents[i].admin {
			return true
		}
	}
	return false
}

// federatedOf lists, sorted and once each, the foreign trust domains that
// these entries federate with, by the names the datastore keys bundles
// with.
func (s *entrySnapshot) federatedOf(entries []int32, own spiffeid.TrustDomain) []string {
	var out []string
	for _, i := range entries {
		e := &s.ents[i]
		for _, k := range s.refs[e.fedAt : e.fedAt+e.fedN] {
			td, err := spiffeid.TrustDomainFromString(s.name(k))
			if err != nil || td == own {
				continue
			}
			// A copy: the name is a slice of the arena, and a notice
			// stream keeps this list for as long as its agent's entries
			// stay the same, which would keep the whole arena of this
			// snapshot alive after it is replaced.
			if !slices.Contains(out, td.Name()) {
				out = append(out, strings.Clone(td.Name()))
			}
		}
	}
	slices.Sort(out)
	return out
}

// snapBuilder makes a snapshot from entries added in ID order.
type snapBuilder struct {
	s *entrySnapshot
	// base is the new snapshot's base (shared with the one it extends),
	// strs its tail as it grows.
	base    string
	strs    strings.Builder
	scratch []byte
}

// Bytes an entry takes in strs, about, for sizing it ahead.
const entryBytesGuess = 256

func newSnapBuilder(entries int) *snapBuilder {
	b := &snapBuilder{s: &entrySnapshot{seed: maphash.MakeSeed()}}
	b.s.ents = make([]flatEntry, 0, entries)
	// About two names an entry (SPIFFE ID, parent); the slots keep at
	// most half full.
	b.s.slots = make([]int32, max(16, nextPow2(4*entries)))
	b.strs.Grow(entries * entryBytesGuess)
	return b
}

// extend starts a builder with everything old holds: old's entries can
// then be added as they are (addKept), their offsets and names staying
// valid.
func extend(old *entrySnapshot, added int) *snapBuilder {
	b := &snapBuilder{s: &entrySnapshot{
		seed: old.seed, garbage: old.garbage,
		names: slices.Clone(old.names), slots: slices.Clone(old.slots), refs: slices.Clone(old.refs),
		ents: make([]flatEntry, 0, len(old.ents)+added),
	}, base: old.base}
	b.strs.Grow(len(old.tail) + added*entryBytesGuess)
	b.strs.WriteString(old.tail)
	return b
}

func nextPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func (b *snapBuilder) intern(name string) int32 {
	s := b.s
	if 2*(len(s.names)+1) > len(s.slots) {
		b.rehash(max(16, 2*len(s.slots)))
	}
	mask := uint64(len(s.slots) - 1)
	h := maphash.String(s.seed, name) & mask
	for ; s.slots[h] != 0; h = (h + 1) & mask {
		n := &s.names[s.slots[h]-1]
		if b.str(n.at, n.n) == name {
			return s.slots[h] - 1
		}
	}
	at := b.appendString(name)
	s.names = append(s.names, flatName{at: at, n: uint32(len(name))})
	s.slots[h] = int32(len(s.names))
	return int32(len(s.names) - 1)
}

func (b *snapBuilder) rehash(size int) {
	s := b.s
	s.slots = make([]int32, size)
	mask := uint64(size - 1)
	for k, n := range s.names {
		h := maphash.String(s.seed, b.str(n.at, n.n)) & mask
		for s.slots[h] != 0 {
			h = (h + 1) & mask
		}
		s.slots[h] = int32(k + 1)
	}
}

// str is entrySnapshot.str over what the builder holds so far.
func (b *snapBuilder) str(at, n uint32) string {
	if base := uint32(len(b.base)); at >= base {
		return b.strs.String()[at-base : at-base+n]
	}
	return b.base[at : at+n]
}

func (b *snapBuilder) appendString(v string) uint32 {
	at := uint32(len(b.base) + b.strs.Len())
	b.strs.WriteString(v)
	return at
}

// addEncoding appends an entry's encoding and returns its record with
// the offsets of the encoding and of the ID in it.
func (b *snapBuilder) addEncoding(enc string) flatEntry {
	f := flatEntry{wireAt: b.appendString(enc), wireLen: uint32(len(enc))}
	if len(enc) == 0 {
		return f
	}
	if n, typ, tagLen := consumeTag(enc); n == entryIDField && typ == protowire.BytesType {
		idLen, k := consumeVarint(enc[tagLen:])
		f.idAt, f.idLen = f.wireAt+uint32(tagLen+k), uint32(idLen)
	}
	return f
}

// addEntry adds e, which must sort after every entry added so far.
func (b *snapBuilder) addEntry(e *types.Entry) {
	s := b.s
	var err error
	b.scratch, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(b.scratch[:0], e)
	if err != nil {
		// Not through the API, whose decoding checks the same (UTF-8),
		// but a row edited in the database could be. The entry is left
		// out, and logged by the cache, rather than stopping the
		// server from loading every other one.
		s.unencodable = append(s.unencodable, unencodableEntry{id: e.Id, err: err})
		return
	}
	f := b.addEncoding(string(b.scratch))
	f.spiffe, f.parent = b.intern(protoIDString(e.SpiffeId)), b.intern(protoIDString(e.ParentId))
	f.revision, f.createdAt, f.admin = e.RevisionNumber, e.CreatedAt, e.Admin
	f.selAt, f.selN = uint32(len(s.refs)), uint32(len(e.Selectors))
	for _, sel := range e.Selectors {
		t, v := b.intern(sel.Type), b.intern(sel.Value)
		s.refs = append(s.refs, t, v)
	}
	f.fedAt, f.fedN = uint32(len(s.refs)), uint32(len(e.FederatesWith))
	for _, td := range e.FederatesWith {
		s.refs = append(s.refs, b.intern(td))
	}
	s.ents = append(s.ents, f)
}

// addFrom adds entry i of old as it is there, without decoding it.
func (b *snapBuilder) addFrom(old *entrySnapshot, i int32) {
	s, o := b.s, &old.ents[i]
	f := b.addEncoding(old.encoding(i))
	f.spiffe, f.parent = b.intern(old.name(o.spiffe)), b.intern(old.name(o.parent))
	f.revision, f.createdAt, f.admin = o.revision, o.createdAt, o.admin
	f.selAt, f.selN = uint32(len(s.refs)), o.selN
	for _, k := range old.refs[o.selAt : o.selAt+2*o.selN] {
		s.refs = append(s.refs, b.intern(old.name(k)))
	}
	f.fedAt, f.fedN = uint32(len(s.refs)), o.fedN
	for _, k := range old.refs[o.fedAt : o.fedAt+o.fedN] {
		s.refs = append(s.refs, b.intern(old.name(k)))
	}
	s.ents = append(s.ents, f)
}

// finish builds the indexes, grouping entries by name in their order.
func (b *snapBuilder) finish() *entrySnapshot {
	s := b.s
	s.base, s.tail = b.base, b.strs.String()
	if b.strs.Cap() > len(s.tail)+len(s.tail)/4 {
		// The guess was well over: a snapshot lives long enough that an
		// exact copy is worth it.
		s.tail = strings.Clone(s.tail)
	}
	if s.base == "" {
		// A fresh build: what it made is the base its patches share.
		s.base, s.tail = s.tail, ""
	}
	for k := range s.names {
		n := &s.names[k]
		n.parentAt, n.parentEnd, n.idAt, n.idEnd = 0, 0, 0, 0
	}
	index := func(key func(*flatEntry) int32, at func(*flatName) (*uint32, *uint32)) []int32 {
		for i := range s.ents {
			_, end := at(&s.names[key(&s.ents[i])])
			*end++
		}
		var sum uint32
		for k := range s.names {
			start, end := at(&s.names[k])
			n := *end
			*start, *end = sum, sum
			sum += n
		}
		out := make([]int32, len(s.ents))
		for i := range s.ents {
			_, end := at(&s.names[key(&s.ents[i])])
			out[*end] = int32(i)
			*end++
		}
		return out
	}
	s.byParent = index(func(e *flatEntry) int32 { return e.parent }, func(n *flatName) (*uint32, *uint32) { return &n.parentAt, &n.parentEnd })
	s.bySPIFFE = index(func(e *flatEntry) int32 { return e.spiffe }, func(n *flatName) (*uint32, *uint32) { return &n.idAt, &n.idEnd })
	return s
}

// newSnapshot makes a snapshot of these entries.
func newSnapshot(entries []*types.Entry) *entrySnapshot {
	if !slices.IsSortedFunc(entries, compareEntryIDs) {
		entries = slices.SortedFunc(slices.Values(entries), compareEntryIDs)
	}
	b := newSnapBuilder(len(entries))
	for _, e := range entries {
		b.addEntry(e)
	}
	return b.finish()
}

func compareEntryIDs(a, b *types.Entry) int { return strings.Compare(a.Id, b.Id) }

// patched returns a snapshot with changes (an entry by ID, nil for a
// deleted one) in place of what s holds. The new snapshot starts as a
// copy of s's arrays, which keeps s's entries valid as they are, and
// appends the changed entries: a patch costs a few copies of memory
// rather than a rebuild. What replaced and deleted entries leave behind
// is counted, and once it is half of what the snapshot holds the patch
// builds afresh instead, without it.
func (s *entrySnapshot) patched(changes map[string]*types.Entry) *entrySnapshot {
	var added []*types.Entry
	for _, e := range changes {
		if e != nil {
			added = append(added, e)
		}
	}
	slices.SortFunc(added, compareEntryIDs)
	// Afresh when half is garbage, or when the tail, which each patch
	// copies, has grown to a quarter of the base.
	var b *snapBuilder
	fresh := 2*s.garbage > s.size() || 4*len(s.tail) > len(s.base)
	if fresh {
		b = newSnapBuilder(len(s.ents) + len(added))
	} else {
		b = extend(s, len(added))
	}
	for i, j := int32(0), 0; int(i) < len(s.ents) || j < len(added); {
		if int(i) < len(s.ents) {
			id := s.id(i)
			if _, changed := changes[id]; changed {
				e := &s.ents[i]
				b.s.garbage += int(e.wireLen) + 4*int(2*e.selN+e.fedN)
				i++
				continue
			}
			if j == len(added) || id < added[j].Id {
				if fresh {
					b.addFrom(s, i)
				} else {
					b.s.ents = append(b.s.ents, s.ents[i])
				}
				i++
				continue
			}
		}
		b.addEntry(added[j])
		j++
	}
	if fresh {
		b.s.garbage = 0
	}
	return b.finish()
}

// walkAuthorized works out authorizedFor's answer: the node-alias entries
// (parented to the server) whose selectors the node's satisfy, the
// entries parented to the agent, and, transitively, every entry parented
// to one of those, in that order.
func (s *entrySnapshot) walkAuthorized(agentID, serverID string, nodeSelectors []*types.Selector) []int32 {
	// The node's selectors as interned pairs: one whose type or value no
	// entry names satisfies no entry's.
	have := make([]uint64, 0, len(nodeSelectors))
	for _, sel := range nodeSelectors {
		t, ok := s.lookup(sel.Type)
		v, ok2 := s.lookup(sel.Value)
		if ok && ok2 {
			have = append(have, selectorPair(t, v))
		}
	}
	slices.Sort(have)
	var out []int32
	seen := make(map[int32]struct{})
	var queue []int32
	visitedParent := make(map[int32]struct{})
	agent, agentKnown := s.lookup(agentID)
	if agentKnown {
		queue = append(queue, agent)
		visitedParent[agent] = struct{}{}
	}
	add := func(i int32) {
		if _, ok := seen[i]; ok {
			return
		}
		seen[i] = struct{}{}
		out = append(out, i)
		child := s.ents[i].spiffe
		if _, ok := visitedParent[child]; !ok {
			visitedParent[child] = struct{}{}
			queue = append(queue, child)
		}
	}
	for _, i := range s.withParent(serverID) {
		if s.satisfied(i, have) {
			add(i)
		}
	}
	for len(queue) > 0 {
		n := &s.names[queue[0]]
		queue = queue[1:]
		for _, i := range s.byParent[n.parentAt:n.parentEnd] {
			add(i)
		}
	}
	return out
}

func selectorPair(t, v int32) uint64 { return uint64(uint32(t))<<32 | uint64(uint32(v)) }

// satisfied tells whether entry i has selectors, all of them in have.
func (s *entrySnapshot) satisfied(i int32, have []uint64) bool {
	e := &s.ents[i]
	if e.selN == 0 {
		return false
	}
	sels := s.refs[e.selAt : e.selAt+2*e.selN]
	for k := 0; k < len(sels); k += 2 {
		if _, ok := slices.BinarySearch(have, selectorPair(sels[k], sels[k+1])); !ok {
			return false
		}
	}
	return true
}

// keptFields is the set of types.Entry field numbers a mask keeps; nil
// keeps them all.
type keptFields *[32]bool

var (
	entryDesc = (&types.Entry{}).ProtoReflect().Descriptor()
	maskDesc  = (&types.EntryMask{}).ProtoReflect().Descriptor()
)

// maskFields reads an EntryMask as the fields it keeps: the ID always,
// and each field whose name the mask sets, as applyEntryMask does.
func maskFields(mask *types.EntryMask) keptFields {
	if mask == nil {
		return nil
	}
	var keep [32]bool
	keep[entryIDField] = true
	m := mask.ProtoReflect()
	fields := maskDesc.Fields()
	for k := 0; k < fields.Len(); k++ {
		fd := fields.Get(k)
		if fd.Kind() != protoreflect.BoolKind || !m.Get(fd).Bool() {
			continue
		}
		if ef := entryDesc.Fields().ByName(fd.Name()); ef != nil && ef.Number() < 32 {
			keep[ef.Number()] = true
		}
	}
	return &keep
}

// appendEntry appends entry i, with only the fields keep names, as the
// length-delimited field num of a message.
func (s *entrySnapshot) appendEntry(b []byte, num protowire.Number, i int32, keep keptFields) []byte {
	enc := s.encoding(i)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	if keep == nil {
		b = protowire.AppendVarint(b, uint64(len(enc)))
		return append(b, enc...)
	}
	size := 0
	forEachField(enc, func(n protowire.Number, field string) {
		if n < 32 && keep[n] {
			size += len(field)
		}
	})
	b = protowire.AppendVarint(b, uint64(size))
	forEachField(enc, func(n protowire.Number, field string) {
		if n < 32 && keep[n] {
			b = append(b, field...)
		}
	})
	return b
}

// forEachField calls f with each field of an encoding this snapshot made:
// its number and its bytes, tag included. Entries have varint and
// length-delimited fields only.
func forEachField(enc string, f func(protowire.Number, string)) {
	for len(enc) > 0 {
		n, typ, k := consumeTag(enc)
		switch typ {
		case protowire.VarintType:
			_, v := consumeVarint(enc[k:])
			k += v
		case protowire.BytesType:
			l, v := consumeVarint(enc[k:])
			k += v + int(l)
		default:
			panic("api: entry snapshot holds an unexpected wire type")
		}
		f(n, enc[:k])
		enc = enc[k:]
	}
}

func consumeTag(enc string) (protowire.Number, protowire.Type, int) {
	v, k := consumeVarint(enc)
	return protowire.Number(v >> 3), protowire.Type(v & 7), k
}

// consumeVarint reads a varint of an encoding the snapshot made (so
// well-formed) and returns it and its length.
func consumeVarint(enc string) (uint64, int) {
	var v uint64
	for k := 0; k < len(enc) && k < 10; k++ {
		v |= uint64(enc[k]&0x7f) << (7 * k)
		if enc[k] < 0x80 {
			return v, k + 1
		}
	}
	panic("api: entry snapshot holds a malformed varint")
}
