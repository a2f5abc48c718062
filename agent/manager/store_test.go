package manager

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bolt "go.etcd.io/bbolt"
)

// storeState builds a state of n entries, each with an SVID, at revision rev.
func storeState(t *testing.T, n int, rev int64, cert *x509.Certificate) *state {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svid := heldSVID(t, []*x509.Certificate{cert}, key)
	st := &state{svids: map[string]storedSVID{}, bundles: map[string]*types.Bundle{"example.org": {TrustDomain: "example.org"}}}
	for i := range n {
		id := fmt.Sprintf("entry-%04d", i)
		st.entries = append(st.entries, &types.Entry{Id: id, RevisionNumber: rev, SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d/%d", i, rev)}})
		st.svids[id] = storedSVID{revision: rev, svid: svid}
	}
	return st
}

// loaded reads the store back as entry ID -> SPIFFE ID path, and the IDs
// holding an SVID with their revisions.
func loaded(t *testing.T, s *store) (map[string]string, map[string]int64) {
	t.Helper()
	st, problems := s.load()
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	entries, svids := map[string]string{}, map[string]int64{}
	for _, e := range st.entries {
		entries[e.Id] = e.SpiffeId.GetPath()
	}
	for id, sv := range st.svids {
		svids[id] = sv.revision
	}
	return entries, svids
}

func writes(s *store) int64 { st := s.db.Stats(); return st.TxStats.GetWrite() }

// TestStoreSavesWhatChanged: saves after the first write only the records
// that changed, and what a restart loads is always the last state saved:
// changed, added and removed entries and SVIDs, and a record the first
// load could not read is gone after the first save.
func TestStoreSavesWhatChanged(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t)
	st := storeState(t, 500, 1, cert)
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	before := writes(s)
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	unchanged := writes(s) - before
	full := before // the first save wrote everything

	// Entries 0-9 change, 10-19 go, 500-509 come; SVID 20 is renewed.
	next := storeState(t, 510, 1, cert)
	for i := range 10 {
		next.entries[i].RevisionNumber = 2
		next.entries[i].SpiffeId.Path = fmt.Sprintf("/changed/%d", i)
	}
	next.entries = slices.Delete(next.entries, 10, 20)
	for i := 10; i < 20; i++ {
		delete(next.svids, fmt.Sprintf("entry-%04d", i))
	}
	renewed := next.svids["entry-0020"]
	renewedKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	renewed.svid = heldSVID(t, []*x509.Certificate{selfSigned(t)}, renewedKey)
	next.svids["entry-0020"] = renewed
	// The other SVIDs are the ones already saved.
	for id, sv := range st.svids {
		if _, ok := next.svids[id]; ok && id != "entry-0020" {
			next.svids[id] = sv
		}
	}
	before = writes(s)
	if err := s.save(next); err != nil {
		t.Fatal(err)
	}
	changed := writes(s) - before
	if unchanged*4 > full || changed*4 > full {
		t.Fatalf("writes: first save %d, unchanged save %d, a few changes %d: later saves rewrite everything", full, unchanged, changed)
	}
	check := func(s *store, want *state) {
		t.Helper()
		entries, svids := loaded(t, s)
		wantEntries, wantSVIDs := map[string]string{}, map[string]int64{}
		for _, e := range want.entries {
			wantEntries[e.Id] = e.SpiffeId.GetPath()
		}
		for id, sv := range want.svids {
			wantSVIDs[id] = sv.revision
		}
		if !maps.Equal(entries, wantEntries) || !maps.Equal(svids, wantSVIDs) {
			t.Fatalf("loaded %d entries, %d SVIDs; want %d, %d", len(entries), len(svids), len(wantEntries), len(wantSVIDs))
		}
	}
	check(s, next)
	st2, _ := s.load()
	if !bytes.Equal(st2.svids["entry-0020"].svid.Chain(), renewed.svid.Chain()) {
		t.Fatal("the renewed SVID was not saved")
	}

	// A restart: a record the load cannot read is dropped by the first
	// save, which rewrites everything.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSVIDs).Put([]byte("garbage"), []byte("{"))
	}); err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = openStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if _, problems := s.load(); len(problems) != 1 {
		t.Fatalf("load problems %v, want the garbage record", problems)
	}
	if err := s.save(next); err != nil {
		t.Fatal(err)
	}
	if _, problems := s.load(); len(problems) != 0 {
		t.Fatalf("after the first save: %v", problems)
	}
	check(s, next)
}

// mappedRSS is how much of the cache file is resident in this process's
// address space (smaps), in KiB.
func mappedRSS(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatalf("read /proc/self/smaps: %v", err)
	}
	var kib int
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && f[5] == path
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			var n int
			fmt.Sscanf(strings.TrimPrefix(line, "Rss:"), "%d", &n)
			kib += n
		}
	}
	return kib
}

// TestStoreUnmapsAfterSave: a save leaves none of the cache file mapped in
// the agent (it walked most of it), and what it wrote still loads, from
// the same open database.
func TestStoreUnmapsAfterSave(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	st := storeState(t, 3000, 1, selfSigned(t))
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, CacheFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Reading every record maps the file in, as the save's walk did.
	entries, svids := loaded(t, s)
	if len(entries) != 3000 || len(svids) != 3000 {
		t.Fatalf("loaded %d entries and %d SVIDs, want 3000 each", len(entries), len(svids))
	}
	if got := mappedRSS(t, path); got < int(fi.Size()>>10)/2 {
		t.Fatalf("only %d KiB of the %d KiB file mapped after a full read: the check cannot tell", got, fi.Size()>>10)
	}
	st.entries[0].RevisionNumber = 2
	st.svids[st.entries[0].Id] = storedSVID{revision: 2, svid: st.svids[st.entries[0].Id].svid}
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	if got := mappedRSS(t, path); got > 64 {
		t.Fatalf("%d KiB of the cache file still mapped after a save, want none", got)
	}
	if _, svids := loaded(t, s); svids[st.entries[0].Id] != 2 {
		t.Fatalf("after the save the changed SVID loads at revision %d, want 2", svids[st.entries[0].Id])
	}
}

// mappingLen is the length of the mapping of this process that starts at
// addr, from /proc/self/maps; 0 when none does.
func mappingLen(t *testing.T, addr uintptr) uintptr {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatalf("read /proc/self/maps: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var start, end uintptr
		if _, err := fmt.Sscanf(line, "%x-%x", &start, &end); err == nil && start == addr {
			return end - start
		}
	}
	return 0
}

// TestStoreUnmapsWithinTheMap: past bbolt's 16 MiB allocation step the
// cache file is longer than bbolt's map of it, and the pages dropped after
// a save must stay inside the map: advising by the file's length zeroed
// the memory mapped after it (the runtime's own, which crashed the agent).
func TestStoreUnmapsWithinTheMap(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var got []uintptr
	orig := madvise
	madvise = func(addr, length uintptr) {
		got = append(got, addr, length, mappingLen(t, addr))
		orig(addr, length)
	}
	defer func() { madvise = orig }()

	if err := s.save(storeState(t, 12000, 1, selfSigned(t))); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CacheFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("madvise calls %v, want one", got)
	}
	addr, length, mapped := got[0], got[1], got[2]
	if mapped == 0 {
		t.Fatalf("no mapping starts at bbolt's data %#x", addr)
	}
	// Without a file longer than the map this test could not tell.
	if uintptr(fi.Size()) <= mapped {
		t.Fatalf("cache file %d bytes, map %d: the file never outgrew the map", fi.Size(), mapped)
	}
	if length == 0 || length > mapped {
		t.Fatalf("dropped %d bytes at %#x, past the %d-byte map (file %d bytes)", length, addr, mapped, fi.Size())
	}
	if _, svids := loaded(t, s); len(svids) != 12000 {
		t.Fatalf("loaded %d SVIDs after the save, want 12000", len(svids))
	}
}
