package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/internal/uuid"
	"github.com/spiffe-hw/spire-hw/server/datastore"
)

const entryCols = `e.id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.admin,
	e.downstream, e.expires_at, e.store_svid, e.hint, e.created_at, e.revision_number`

// CreateEntry implements datastore.DataStore.
func (s *Store) CreateEntry(ctx context.Context, e *types.Entry) (*types.Entry, error) {
	id, err := newEntryIDFor(e)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: create entry: %w", err)
	}
	var out *types.Entry
	err = s.write(ctx, func(t txn) error {
		if err := bumpEntriesRevision(ctx, t); err != nil {
			return err
		}
		out, err = insertEntry(ctx, t, id, e)
		return err
	})
	if err != nil {
		return nil, mapErr("create entry", err)
	}
	return out, nil
}

// CreateEntries implements datastore.DataStore. Each entry is inserted
// under a savepoint, so that one refused as a duplicate is undone alone
// (a failed statement aborts a PostgreSQL transaction); the batch commits
// once, which on SQLite is one sync of the WAL instead of one per entry.
func (s *Store) CreateEntries(ctx context.Context, entries []*types.Entry) ([]*types.Entry, []error, error) {
	ids := make([]string, len(entries))
	invalid := make([]error, len(entries))
	for i, e := range entries {
		var err error
		if ids[i], err = newEntryIDFor(e); err != nil {
			invalid[i] = fmt.Errorf("sqlstore: create entry: %w", err)
		}
	}
	var created []*types.Entry
	var errs []error
	err := s.write(ctx, func(t txn) error {
		// Afresh on every attempt: a MySQL deadlock runs this again.
		created, errs = make([]*types.Entry, len(entries)), slices.Clone(invalid)
		if err := bumpEntriesRevision(ctx, t); err != nil {
			return err
		}
		for i, e := range entries {
			if errs[i] != nil {
				continue
			}
			// Savepoints bypass the statement cache: PostgreSQL cannot
			// prepare them.
			if _, err := t.tx.ExecContext(ctx, "SAVEPOINT entry"); err != nil {
				return err
			}
			out, err := insertEntry(ctx, t, ids[i], e)
			if isUniqueViolation(err) {
				if _, rerr := t.tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT entry"); rerr != nil {
					return rerr
				}
				errs[i] = mapErr("create entry", err)
			} else if err != nil {
				return err
			}
			if _, err := t.tx.ExecContext(ctx, "RELEASE SAVEPOINT entry"); err != nil {
				return err
			}
			created[i] = out
		}
		return nil
	})
	if err != nil {
		return nil, nil, mapErr("create entries", err)
	}
	return created, errs, nil
}

// newEntryIDFor checks e's IDs and returns its entry ID, a new one when
// it has none.
func newEntryIDFor(e *types.Entry) (string, error) {
	if err := checkEntryIDs(e); err != nil {
		return "", err
	}
	if id := e.GetId(); id != "" {
		return id, nil
	}
	return newEntryID()
}

// insertEntry writes e under id, with its children and its event, and
// reads it back.
func insertEntry(ctx context.Context, t txn, id string, e *types.Entry) (*types.Entry, error) {
	_, err := t.exec(ctx, `INSERT INTO registered_entries (id, spiffe_id, parent_id, x509_svid_ttl,
		jwt_svid_ttl, admin, downstream, expires_at, store_svid, hint, created_at, revision_number, unique_key)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`,
		id, spiffeIDString(e.SpiffeId), spiffeIDString(e.ParentId), e.X509SvidTtl, e.JwtSvidTtl,
		e.Admin, e.Downstream, e.ExpiresAt, e.StoreSvid, e.Hint, time.Now().Unix(), entryUniqueKey(e))
	if err != nil {
		return nil, err
	}
	if err := writeEntryChildren(ctx, t, id, e, true, true, true); err != nil {
		return nil, err
	}
	if err := appendEvent(ctx, t, datastore.EntryEvents, id); err != nil {
		return nil, err
	}
	return fetchEntry(ctx, t, id)
}

// FetchEntry implements datastore.DataStore.
func (s *Store) FetchEntry(ctx context.Context, id string) (*types.Entry, error) {
	var out *types.Entry
	err := s.read(ctx, func(t txn) (err error) {
		out, err = fetchEntry(ctx, t, id)
		return err
	})
	if err != nil {
		return nil, mapErr("fetch entry", err)
	}
	return out, nil
}

// ListEntries implements datastore.DataStore. Entries come in ID order.
func (s *Store) ListEntries(ctx context.Context, req *datastore.ListEntriesRequest) ([]*types.Entry, string, error) {
	w, err := entryFilter(req)
	if err != nil {
		return nil, "", fmt.Errorf("sqlstore: list entries: %w", err)
	}
	var p *datastore.Pagination
	var c datastore.DataConsistency
	if req != nil {
		p, c = req.Pagination, req.DataConsistency
	}
	limit, err := page(p, "e.id", w)
	if err != nil {
		return nil, "", err
	}
	var entries []*types.Entry
	err = s.readMaybeStale(ctx, c, func(t txn) (err error) {
		entries, err = loadEntries(ctx, t, w, limit)
		return err
	})
	if err != nil {
		return nil, "", mapErr("list entries", err)
	}
	next := ""
	if limit > 0 && len(entries) == limit {
		entries = entries[:limit-1]
		next = encodePageToken(entries[len(entries)-1].Id)
	}
	return entries, next, nil
}

// CountEntries implements datastore.DataStore; it ignores pagination.
func (s *Store) CountEntries(ctx context.Context, req *datastore.ListEntriesRequest) (int32, error) {
	w, err := entryFilter(req)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: count entries: %w", err)
	}
	var n int32
	err = s.read(ctx, func(t txn) error {
		return t.queryRow(ctx, `SELECT COUNT(*) FROM registered_entries e WHERE `+w.sql(), w.args...).Scan(&n)
	})
	if err != nil {
		return 0, mapErr("count entries", err)
	}
	return n, nil
}

// UpdateEntry implements datastore.DataStore. RevisionNumber and CreatedAt
// are the store's to manage and are never taken from e.
func (s *Store) UpdateEntry(ctx context.Context, e *types.Entry, mask *types.EntryMask) (*types.Entry, error) {
	if e.GetId() == "" {
		return nil, errors.New("sqlstore: update entry: missing ID")
	}
	if mask == nil {
		mask = &types.EntryMask{SpiffeId: true, ParentId: true, Selectors: true, X509SvidTtl: true,
			FederatesWith: true, Admin: true, Downstream: true, ExpiresAt: true, DnsNames: true,
			StoreSvid: true, JwtSvidTtl: true, Hint: true}
	}
	var out *types.Entry
	err := s.write(ctx, func(t txn) error {
		// Taking the revision row lock first serializes entry writers on
		// PostgreSQL, so the read below is current.
		if err := bumpEntriesRevision(ctx, t); err != nil {
			return err
		}
		cur, err := fetchEntry(ctx, t, e.Id)
		if err != nil {
			return err
		}
		if mask.SpiffeId {
			cur.SpiffeId = e.SpiffeId
		}
		if mask.ParentId {
			cur.ParentId = e.ParentId
		}
		if mask.Selectors {
			cur.Selectors = e.Selectors
		}
		if mask.X509SvidTtl {
			cur.X509SvidTtl = e.X509SvidTtl
		}
		if mask.JwtSvidTtl {
			cur.JwtSvidTtl = e.JwtSvidTtl
		}
		if mask.FederatesWith {
			cur.FederatesWith = e.FederatesWith
		}
		if mask.Admin {
			cur.Admin = e.Admin
		}
		if mask.Downstream {
			cur.Downstream = e.Downstream
		}
		if mask.ExpiresAt {
			cur.ExpiresAt = e.ExpiresAt
		}
		if mask.DnsNames {
			cur.DnsNames = e.DnsNames
		}
		if mask.StoreSvid {
			cur.StoreSvid = e.StoreSvid
		}
		if mask.Hint {
			cur.Hint = e.Hint
		}
		if err := checkEntryIDs(cur); err != nil {
			return err
		}
		_, err = t.exec(ctx, `UPDATE registered_entries SET spiffe_id = ?, parent_id = ?, x509_svid_ttl = ?,
			jwt_svid_ttl = ?, admin = ?, downstream = ?, expires_at = ?, store_svid = ?, hint = ?,
			revision_number = revision_number + 1, unique_key = ? WHERE id = ?`,
			spiffeIDString(cur.SpiffeId), spiffeIDString(cur.ParentId), cur.X509SvidTtl, cur.JwtSvidTtl,
			cur.Admin, cur.Downstream, cur.ExpiresAt, cur.StoreSvid, cur.Hint, entryUniqueKey(cur), cur.Id)
		if err != nil {
			return err
		}
		if mask.Selectors || mask.DnsNames || mask.FederatesWith {
			if err := deleteEntryChildren(ctx, t, cur.Id, mask.Selectors, mask.DnsNames, mask.FederatesWith); err != nil {
				return err
			}
			if err := writeEntryChildren(ctx, t, cur.Id, cur, mask.Selectors, mask.DnsNames, mask.FederatesWith); err != nil {
				return err
			}
		}
		if err := appendEvent(ctx, t, datastore.EntryEvents, cur.Id); err != nil {
			return err
		}
		out, err = fetchEntry(ctx, t, cur.Id)
		return err
	})
	if err != nil {
		return nil, mapErr("update entry", err)
	}
	return out, nil
}

// DeleteEntry implements datastore.DataStore.
func (s *Store) DeleteEntry(ctx context.Context, id string) (*types.Entry, error) {
	var out *types.Entry
	err := s.write(ctx, func(t txn) error {
		if err := bumpEntriesRevision(ctx, t); err != nil {
			return err
		}
		var err error
		if out, err = fetchEntry(ctx, t, id); err != nil {
			return err
		}
		// Children go by ON DELETE CASCADE.
		if _, err = t.exec(ctx, `DELETE FROM registered_entries WHERE id = ?`, id); err != nil {
			return err
		}
		return appendEvent(ctx, t, datastore.EntryEvents, id)
	})
	if err != nil {
		return nil, mapErr("delete entry", err)
	}
	return out, nil
}

// PruneEntries implements datastore.DataStore: it deletes every entry
// with an expiry before expiresBefore (0 never expires), pruneBatch per
// transaction.
func (s *Store) PruneEntries(ctx context.Context, expiresBefore time.Time) ([]*types.Entry, error) {
	var out []*types.Entry
	for {
		batch, more, err := s.pruneEntriesBatch(ctx, expiresBefore)
		out = append(out, batch...)
		if err != nil || !more {
			return out, err
		}
	}
}

// pruneEntriesBatch is one transaction of PruneEntries: at most
// pruneBatch entries, so that the event IDs one transaction holds while
// it is open stay within what a server polling the events looks back
// over for gaps (server/events' lookback), and no prune holds the
// revision row's lock for long. more says the batch was full.
func (s *Store) pruneEntriesBatch(ctx context.Context, expiresBefore time.Time) (out []*types.Entry, more bool, err error) {
	err = s.write(ctx, func(t txn) error {
		out, more = nil, false // a retried transaction starts over
		// The revision row's lock first: a server pruning at the same
		// moment holds it until it commits, and the listing below then
		// sees what that server deleted, so the two split the work
		// instead of both failing on entries the other deleted.
		var rev int64
		if err := t.queryRow(ctx, `SELECT revision FROM entries_revision WHERE id = 1`+t.forUpdate()).Scan(&rev); err != nil {
			return err
		}
		var ids []string
		err := eachRow(ctx, t, `SELECT id FROM registered_entries WHERE expires_at != 0 AND expires_at < ? ORDER BY id LIMIT ?`,
			[]any{expiresBefore.Unix(), pruneBatch}, func(scan func(...any) error) error {
				var id string
				if err := scan(&id); err != nil {
					return err
				}
				ids = append(ids, id)
				return nil
			})
		if err != nil || len(ids) == 0 {
			return err
		}
		if err := bumpEntriesRevision(ctx, t); err != nil {
			return err
		}
		for _, id := range ids {
			e, err := fetchEntry(ctx, t, id)
			if err != nil {
				return err
			}
			if _, err := t.exec(ctx, `DELETE FROM registered_entries WHERE id = ?`, id); err != nil {
				return err
			}
			if err := appendEvent(ctx, t, datastore.EntryEvents, id); err != nil {
				return err
			}
			out = append(out, e)
		}
		more = len(ids) == pruneBatch
		return nil
	})
	if err != nil {
		return nil, false, mapErr("prune entries", err)
	}
	return out, more, nil
}

// pruneBatch bounds the entries one PruneEntries transaction deletes
// (a variable for tests).
var pruneBatch = 500

// EntriesRevision implements datastore.DataStore.
func (s *Store) EntriesRevision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.read(ctx, func(t txn) error {
		return t.queryRow(ctx, `SELECT revision FROM entries_revision WHERE id = 1`).Scan(&rev)
	})
	if err != nil {
		return 0, mapErr("entries revision", err)
	}
	return rev, nil
}

func bumpEntriesRevision(ctx context.Context, t txn) error {
	_, err := t.exec(ctx, `UPDATE entries_revision SET revision = revision + 1 WHERE id = 1`)
	return err
}

func checkEntryIDs(e *types.Entry) error {
	if e == nil {
		return errors.New("nil entry")
	}
	if e.SpiffeId.GetTrustDomain() == "" {
		return errors.New("missing SPIFFE ID")
	}
	if e.ParentId.GetTrustDomain() == "" {
		return errors.New("missing parent ID")
	}
	return nil
}

// entryFilter turns a request into conditions on registered_entries e.
func entryFilter(req *datastore.ListEntriesRequest) (*where, error) {
	w := &where{}
	if req == nil {
		return w, nil
	}
	if req.BySPIFFEID != "" {
		w.add("e.spiffe_id = ?", req.BySPIFFEID)
	}
	if req.ByParentID != "" {
		w.add("e.parent_id = ?", req.ByParentID)
	}
	if req.ByHint != nil {
		w.add("e.hint = ?", *req.ByHint)
	}
	if req.ByDownstream != nil {
		w.add("e.downstream = ?", *req.ByDownstream)
	}
	if f := req.BySelectors; f != nil {
		if err := setMatch("selectors", "entry_id", "e.id", []string{"type", "value"},
			selectorMembers(f.Selectors), f.Match, w); err != nil {
			return nil, fmt.Errorf("by selectors: %w", err)
		}
	}
	if f := req.ByFederatesWith; f != nil {
		var members [][]any
		seen := map[string]bool{}
		for _, td := range f.TrustDomains {
			td = trustDomainName(td)
			if !seen[td] {
				seen[td] = true
				members = append(members, []any{td})
			}
		}
		if err := setMatch("federates_with", "entry_id", "e.id", []string{"trust_domain"},
			members, f.Match, w); err != nil {
			return nil, fmt.Errorf("by federates with: %w", err)
		}
	}
	return w, nil
}

func fetchEntry(ctx context.Context, t txn, id string) (*types.Entry, error) {
	w := &where{}
	w.add("e.id = ?", id)
	entries, err := loadEntries(ctx, t, w, 0)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("entry %q: %w", id, datastore.ErrNotFound)
	}
	return entries[0], nil
}

// loadEntries reads the entries w selects, in ID order, with their
// selectors, DNS names and federated trust domains. The child queries
// select their rows with the same filter, so a listing costs four queries
// whatever its size.
func loadEntries(ctx context.Context, t txn, w *where, limit int) ([]*types.Entry, error) {
	cond := w.sql() + " ORDER BY e.id" + limitSQL(limit)
	rows, err := t.query(ctx, `SELECT `+entryCols+` FROM registered_entries e WHERE `+cond, w.args...)
	if err != nil {
		return nil, err
	}
	var entries []*types.Entry
	byID := map[string]*types.Entry{}
	for rows.Next() {
		e := &types.Entry{}
		var spiffeID, parentID string
		if err := rows.Scan(&e.Id, &spiffeID, &parentID, &e.X509SvidTtl, &e.JwtSvidTtl, &e.Admin,
			&e.Downstream, &e.ExpiresAt, &e.StoreSvid, &e.Hint, &e.CreatedAt, &e.RevisionNumber); err != nil {
			rows.Close()
			return nil, err
		}
		e.SpiffeId = parseSPIFFEID(spiffeID)
		e.ParentId = parseSPIFFEID(parentID)
		entries = append(entries, e)
		byID[e.Id] = e
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, nil
	}
	sub := t.inPage(`SELECT e.id FROM registered_entries e WHERE ` + cond)

	err = eachRow(ctx, t, `SELECT x.entry_id, x.type, x.value FROM selectors x WHERE x.entry_id IN (`+sub+`)`,
		w.args, func(scan func(...any) error) error {
			var id string
			sel := &types.Selector{}
			if err := scan(&id, &sel.Type, &sel.Value); err != nil {
				return err
			}
			if e := byID[id]; e != nil {
				e.Selectors = append(e.Selectors, sel)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, t, `SELECT x.entry_id, x.value FROM dns_names x WHERE x.entry_id IN (`+sub+`) ORDER BY x.entry_id, x.ord`,
		w.args, func(scan func(...any) error) error {
			var id, name string
			if err := scan(&id, &name); err != nil {
				return err
			}
			if e := byID[id]; e != nil {
				e.DnsNames = append(e.DnsNames, name)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, t, `SELECT x.entry_id, x.trust_domain FROM federates_with x WHERE x.entry_id IN (`+sub+`) ORDER BY x.entry_id, x.ord`,
		w.args, func(scan func(...any) error) error {
			var id, td string
			if err := scan(&id, &td); err != nil {
				return err
			}
			if e := byID[id]; e != nil {
				e.FederatesWith = append(e.FederatesWith, td)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		sortSelectors(e.Selectors)
	}
	return entries, nil
}

// eachRow runs query and calls fn for every row.
func eachRow(ctx context.Context, t txn, query string, args []any, fn func(scan func(...any) error) error) error {
	rows, err := t.query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

func deleteEntryChildren(ctx context.Context, t txn, id string, sel, dns, fed bool) error {
	for _, c := range []struct {
		do    bool
		table string
	}{{sel, "selectors"}, {dns, "dns_names"}, {fed, "federates_with"}} {
		if !c.do {
			continue
		}
		if _, err := t.exec(ctx, `DELETE FROM `+c.table+` WHERE entry_id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

// writeEntryChildren inserts e's selectors (as a set), DNS names (in
// order) and federated trust domains (in order, first occurrence kept).
func writeEntryChildren(ctx context.Context, t txn, id string, e *types.Entry, sel, dns, fed bool) error {
	if sel {
		for _, s := range uniqueSelectors(e.Selectors) {
			if _, err := t.exec(ctx, `INSERT INTO selectors (entry_id, type, value) VALUES (?, ?, ?)`,
				id, s.Type, s.Value); err != nil {
				return err
			}
		}
	}
	if dns {
		for i, name := range e.DnsNames {
			if _, err := t.exec(ctx, `INSERT INTO dns_names (entry_id, ord, value) VALUES (?, ?, ?)`,
				id, i, name); err != nil {
				return err
			}
		}
	}
	if fed {
		seen := map[string]bool{}
		for i, td := range e.FederatesWith {
			td = trustDomainName(td)
			if seen[td] {
				continue
			}
			seen[td] = true
			if _, err := t.exec(ctx, `INSERT INTO federates_with (entry_id, ord, trust_domain) VALUES (?, ?, ?)`,
				id, i, td); err != nil {
				return err
			}
		}
	}
	return nil
}

// entryUniqueKey hashes what makes two entries duplicates: SPIFFE ID,
// parent ID and the selector set. A UNIQUE column holding it lets the
// database reject duplicates atomically, with no read-then-insert race.
// Every part is length-prefixed so no two triples share an encoding.
func entryUniqueKey(e *types.Entry) string {
	h := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put(spiffeIDString(e.SpiffeId))
	put(spiffeIDString(e.ParentId))
	for _, s := range uniqueSelectors(e.Selectors) {
		put(s.Type)
		put(s.Value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func spiffeIDString(id *types.SPIFFEID) string {
	return "spiffe://" + id.GetTrustDomain() + id.GetPath()
}

func parseSPIFFEID(s string) *types.SPIFFEID {
	rest := strings.TrimPrefix(s, "spiffe://")
	td, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		td, path = rest[:i], rest[i:]
	}
	return &types.SPIFFEID{TrustDomain: td, Path: path}
}

// newEntryID returns a random RFC 4122 version 4 UUID, as SPIRE's entry IDs.
func newEntryID() (string, error) { return uuid.NewV4() }
