package manager

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/internal/daemondir"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Files in the data directory.
const (
	// AgentSVIDFile holds the agent's X509-SVID chain as concatenated DER
	// (SPIRE's layout).
	AgentSVIDFile = "agent_svid.der"
	// BundleFile holds the trust domain's X.509 authorities as
	// concatenated DER (SPIRE's layout); the full bundle, with JWT
	// authorities, is in the cache database.
	BundleFile = "bundle.der"
	// CacheFile is the bbolt database of entries, workload SVIDs and keys,
	// and bundles.
	CacheFile = "svid_cache.db"
)

var (
	bucketEntries = []byte("entries") // entry ID -> types.Entry
	bucketSVIDs   = []byte("svids")   // entry ID -> svidRecord (JSON)
	bucketBundles = []byte("bundles") // trust domain name -> types.Bundle
	bucketMeta    = []byte("meta")
	keyReattest   = []byte("reattestable")
)

// svidRecord is a workload SVID at rest. The key is PKCS#8 DER, unencrypted
// (the database is mode 0600 in a 0700 directory).
type svidRecord struct {
	Revision int64    `json:"revision"` // entry revision the SVID was issued for
	Chain    [][]byte `json:"chain"`
	Key      []byte   `json:"key"`
}

// storedSVID is a decoded svidRecord.
type storedSVID struct {
	revision int64
	svid     *cache.X509SVID
}

// state is everything the agent persists besides its own key.
type state struct {
	entries      []*types.Entry
	svids        map[string]storedSVID
	bundles      map[string]*types.Bundle // by trust domain name
	reattestable bool
}

// store keeps the agent's state in its data directory.
type store struct {
	dir string
	db  *bolt.DB

	// written is what the database holds, by entry ID, as far as save
	// knows: nil until the first save, which rewrites everything (so that
	// records load skipped are dropped); later saves write only what
	// changed. Rewriting 10,000 entries and SVIDs on every change
	// allocated a page for every record each time (bbolt's Tx.allocate
	// and the JSON of the SVIDs were 32 MiB of the agent's 100 MiB heap
	// while it filled). mu serializes saves, which read and replace it.
	mu      sync.Mutex
	written *writtenState
}

// writtenState identifies the persisted records: an entry by its revision,
// an SVID by its revision and the SVID itself (which never changes, so the
// same one is the same record).
type writtenState struct {
	entries map[string]int64
	svids   map[string]svidMark
}

type svidMark struct {
	revision int64
	svid     *cache.X509SVID
}

// openStore opens the cache in dir; log gets a warning when an existing
// cache (it holds SVID keys) is readable by other users.
func openStore(dir string, log *slog.Logger) (*store, error) {
	if _, err := daemondir.Ensure(dir, 0o700); err != nil {
		return nil, fmt.Errorf("manager: data dir: %w", err)
	}
	path := filepath.Join(dir, CacheFile)
	_, statErr := os.Lstat(path)
	daemondir.WarnShared(log, path, false, "The SVID cache is accessible to other users, and it holds SVID private keys")
	// A second agent on the same data dir would corrupt it: fail fast on
	// the lock instead of waiting forever.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("manager: open %s: %w", CacheFile, err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// The umask can only have narrowed 0600 (to 0400 under umask
		// 0277, say, which the next start could not open for writing);
		// set exactly what bolt was asked for on the file it created.
		if err := os.Chmod(path, 0o600); err != nil {
			db.Close()
			return nil, fmt.Errorf("manager: set mode of %s: %w", CacheFile, err)
		}
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketSVIDs, bucketBundles, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("manager: init %s: %w", CacheFile, err)
	}
	return &store{dir: dir, db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// save replaces the persisted state in one transaction, so that a crash
// leaves either the old state or the new one.
func (s *store) save(st *state) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := &writtenState{entries: make(map[string]int64, len(st.entries)), svids: make(map[string]svidMark, len(st.svids))}
	err := s.db.Update(func(tx *bolt.Tx) error {
		prev := s.written
		if prev == nil {
			prev = &writtenState{}
			for _, name := range [][]byte{bucketEntries, bucketSVIDs} {
				if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
					return err
				}
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
		}
		entries := tx.Bucket(bucketEntries)
		for _, e := range st.entries {
			next.entries[e.Id] = e.RevisionNumber
			if rev, ok := prev.entries[e.Id]; ok && rev == e.RevisionNumber {
				continue
			}
			b, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			if err := entries.Put([]byte(e.Id), b); err != nil {
				return err
			}
		}
		for id := range prev.entries {
			if _, ok := next.entries[id]; !ok {
				if err := entries.Delete([]byte(id)); err != nil {
					return err
				}
			}
		}
		svids := tx.Bucket(bucketSVIDs)
		for id, sv := range st.svids {
			mark := svidMark(sv)
			next.svids[id] = mark
			if old, ok := prev.svids[id]; ok && old == mark {
				continue
			}
			rec := svidRecord{Revision: sv.revision, Chain: sv.svid.Certificates(), Key: sv.svid.PrivateKey()}
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := svids.Put([]byte(id), b); err != nil {
				return err
			}
		}
		for id := range prev.svids {
			if _, ok := next.svids[id]; !ok {
				if err := svids.Delete([]byte(id)); err != nil {
					return err
				}
			}
		}
		// A handful of bundles: rewritten whole.
		if err := tx.DeleteBucket(bucketBundles); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
		bundles, err := tx.CreateBucket(bucketBundles)
		if err != nil {
			return err
		}
		for td, bundle := range st.bundles {
			b, err := proto.Marshal(bundle)
			if err != nil {
				return err
			}
			if err := bundles.Put([]byte(td), b); err != nil {
				return err
			}
		}
		reattest := []byte{0}
		if st.reattestable {
			reattest[0] = 1
		}
		return tx.Bucket(bucketMeta).Put(keyReattest, reattest)
	})
	if err != nil {
		// The transaction rolled back: what was written before stands,
		// unless it never was known.
		return fmt.Errorf("manager: save cache: %w", err)
	}
	s.written = next
	s.unmapPages()
	return nil
}

// unmapPages drops the cache file's pages from the agent's address space
// after a save. The agent reads the database only at start (everything
// else is in memory) and bbolt writes with pwrite, yet a save walks the
// B+tree through bbolt's read-only map: after the first save of 10,000
// SVIDs all 24 MiB of the file's pages were resident in the agent, a
// third of its RSS, for nothing. MADV_DONTNEED on a shared map of a file
// only unmaps: the data stays in the file and the page cache, and the
// next save faults in the few pages it walks. A failure is harmless (the
// pages stay mapped) and not logged.
//
// The length is the database's size as a transaction sees it (its pages
// up to the high-water mark), which bbolt's map always covers; the file
// can be longer than the map (past 16 MiB bbolt grows the file 16 MiB
// ahead of the map), and advising past the map zeroed whatever the
// runtime had mapped next to it, which crashed the agent in its next
// collection (issue 18's fleet bench, "span set block with unpopped
// elements").
func (s *store) unmapPages() {
	// In a read transaction, so that bbolt cannot remap meanwhile (a
	// remap takes the lock that read transactions hold).
	_ = s.db.View(func(tx *bolt.Tx) error {
		size := tx.Size()
		// bbolt maps at least the whole file; a damaged meta page could
		// name more pages than that, so never go past the file either.
		if fi, err := os.Stat(s.db.Path()); err == nil && fi.Size() < size {
			size = fi.Size()
		}
		if size > 0 {
			// Data is the start of bbolt's map. A uintptr is passed on,
			// never converted to a pointer.
			madvise(s.db.Info().Data, uintptr(size))
		}
		return nil
	})
}

// madvise drops [addr, addr+length) with MADV_DONTNEED; a variable so that
// a test can check the range against the map.
var madvise = func(addr, length uintptr) {
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, addr, length, unix.MADV_DONTNEED)
}

// load reads the persisted state. Records that do not parse are skipped:
// the sync replaces them, and one bad record must not keep the agent from
// serving the others.
func (s *store) load() (*state, []error) {
	st := &state{svids: map[string]storedSVID{}, bundles: map[string]*types.Bundle{}}
	var problems []error
	err := s.db.View(func(tx *bolt.Tx) error {
		_ = tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			e := new(types.Entry)
			if err := proto.Unmarshal(v, e); err != nil || e.Id != string(k) {
				problems = append(problems, fmt.Errorf("entry %q: unreadable record", k))
				return nil
			}
			st.entries = append(st.entries, e)
			return nil
		})
		_ = tx.Bucket(bucketSVIDs).ForEach(func(k, v []byte) error {
			sv, err := decodeSVID(v)
			if err != nil {
				problems = append(problems, fmt.Errorf("svid of entry %q: %w", k, err))
				return nil
			}
			st.svids[string(k)] = sv
			return nil
		})
		_ = tx.Bucket(bucketBundles).ForEach(func(k, v []byte) error {
			b := new(types.Bundle)
			if err := proto.Unmarshal(v, b); err != nil {
				problems = append(problems, fmt.Errorf("bundle %q: unreadable record", k))
				return nil
			}
			st.bundles[string(k)] = b
			return nil
		})
		if v := tx.Bucket(bucketMeta).Get(keyReattest); len(v) == 1 {
			st.reattestable = v[0] == 1
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err)
	}
	return st, problems
}

func decodeSVID(v []byte) (storedSVID, error) {
	var rec svidRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return storedSVID{}, err
	}
	svid, err := cache.ParseX509SVID(rec.Chain, rec.Key)
	if err != nil {
		return storedSVID{}, err
	}
	return storedSVID{revision: rec.Revision, svid: svid}, nil
}

// saveAgentSVID writes the agent's chain and the X.509 authorities of its
// trust domain.
func (s *store) saveAgentSVID(chain []*x509.Certificate, authorities []*x509.Certificate) error {
	if err := disk.WriteFileAtomic(filepath.Join(s.dir, AgentSVIDFile), concatDER(chain)); err != nil {
		return fmt.Errorf("manager: save agent SVID: %w", err)
	}
	if err := disk.WriteFileAtomic(filepath.Join(s.dir, BundleFile), concatDER(authorities)); err != nil {
		return fmt.Errorf("manager: save bundle: %w", err)
	}
	return nil
}

// loadAgentSVID returns the stored agent chain and X.509 authorities, or
// fs.ErrNotExist.
func (s *store) loadAgentSVID() (chain, authorities []*x509.Certificate, err error) {
	der, err := os.ReadFile(filepath.Join(s.dir, AgentSVIDFile))
	if err != nil {
		return nil, nil, err
	}
	if chain, err = x509.ParseCertificates(der); err != nil || len(chain) == 0 {
		return nil, nil, fmt.Errorf("manager: parse %s: %w", AgentSVIDFile, errors.Join(err, errIfEmpty(chain)))
	}
	der, err = os.ReadFile(filepath.Join(s.dir, BundleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return chain, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if authorities, err = x509.ParseCertificates(der); err != nil {
		return nil, nil, fmt.Errorf("manager: parse %s: %w", BundleFile, err)
	}
	return chain, authorities, nil
}

func errIfEmpty(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	return nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		buf.Write(c.Raw)
	}
	return buf.Bytes()
}
