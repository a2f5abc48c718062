package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// eventKeyCol is the column of kind's table that names what changed.
func eventKeyCol(kind datastore.EventKind) string {
	if kind == datastore.NodeEvents {
		return "spiffe_id"
	}
	return "entry_id"
}

// appendEvent records, in the write's transaction t, that key changed, so
// the event commits (or rolls back) with the change itself.
func appendEvent(ctx context.Context, t txn, kind datastore.EventKind, key string) error {
	_, err := t.exec(ctx, `INSERT INTO `+kind.String()+` (created_at, `+eventKeyCol(kind)+`) VALUES (?, ?)`,
		time.Now().Unix(), key)
	return err
}

// ListEvents implements datastore.DataStore. With TolerateStale it reads
// the replica, as SPIRE's events-based cache does: the rows an event
// names are then read from the primary (server/events), so a lagging
// replica delays a change and never serves an older row for it.
func (s *Store) ListEvents(ctx context.Context, kind datastore.EventKind, afterID int64, limit int, c datastore.DataConsistency) ([]datastore.Event, error) {
	var out []datastore.Event
	err := s.readMaybeStale(ctx, c, func(t txn) error {
		out = nil
		return eachRow(ctx, t, `SELECT id, `+eventKeyCol(kind)+` FROM `+kind.String()+` WHERE id > ? ORDER BY id`+limitSQL(limit),
			[]any{afterID}, func(scan func(...any) error) error {
				var ev datastore.Event
				if err := scan(&ev.ID, &ev.Key); err != nil {
					return err
				}
				out = append(out, ev)
				return nil
			})
	})
	if err != nil {
		return nil, mapErr("list "+kind.String(), err)
	}
	return out, nil
}

// maxInList bounds the values of one IN list, well within every engine's
// limit on bound parameters (SQLite's is 32766, PostgreSQL's 65535).
const maxInList = 500

// FetchEvents implements datastore.DataStore.
func (s *Store) FetchEvents(ctx context.Context, kind datastore.EventKind, ids []int64, c datastore.DataConsistency) ([]datastore.Event, error) {
	var out []datastore.Event
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxInList)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		// found is per chunk, so that a read tried again (on the
		// primary, when the replica failed) does not add a row twice.
		var found []datastore.Event
		err := s.readMaybeStale(ctx, c, func(t txn) error {
			found = found[:0]
			return eachRow(ctx, t, `SELECT id, `+eventKeyCol(kind)+` FROM `+kind.String()+` WHERE id IN (`+placeholders(len(chunk))+`) ORDER BY id`,
				args, func(scan func(...any) error) error {
					var ev datastore.Event
					if err := scan(&ev.ID, &ev.Key); err != nil {
						return err
					}
					found = append(found, ev)
					return nil
				})
		})
		if err != nil {
			return nil, mapErr("fetch "+kind.String(), err)
		}
		out = append(out, found...)
	}
	// Each chunk is in ID order; ids need not be sorted.
	slices.SortFunc(out, func(a, b datastore.Event) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// LastEventID implements datastore.DataStore.
func (s *Store) LastEventID(ctx context.Context, kind datastore.EventKind) (int64, error) {
	var id int64
	err := s.read(ctx, func(t txn) error {
		return t.queryRow(ctx, `SELECT COALESCE(MAX(id), 0) FROM `+kind.String()).Scan(&id)
	})
	if err != nil {
		return 0, mapErr("last "+kind.String(), err)
	}
	return id, nil
}

// PruneEvents implements datastore.DataStore. The newest event of each
// table stays whatever its age: MariaDB before 10.2.4 and MySQL before 8
// recount an InnoDB counter from MAX(id) at restart, and an empty table
// would then number from 1 again, below what every server has seen.
//
// It deletes pruneEventsBatch events per transaction, each batch a range
// of IDs: InnoDB locks the index range a DELETE scans, and a DELETE by
// created_at alone, with no younger event after the range, locked the gap
// up to the end of the index, where every write appends its event, until
// it committed. A range of IDs that ends at an existing ID holds only
// that range, and a batch only briefly.
func (s *Store) PruneEvents(ctx context.Context, olderThan time.Time) (int64, error) {
	var total int64
	for _, kind := range []datastore.EventKind{datastore.EntryEvents, datastore.NodeEvents} {
		for {
			var n int64
			err := s.write(ctx, func(t txn) error {
				var last, hi int64
				if err := t.queryRow(ctx, `SELECT COALESCE(MAX(id), 0) FROM `+kind.String()).Scan(&last); err != nil {
					return err
				}
				// The highest ID of the next batch: the oldest
				// pruneEventsBatch old events, in ID order.
				if err := t.queryRow(ctx, `SELECT COALESCE(MAX(id), 0) FROM (SELECT id FROM `+kind.String()+
					` WHERE created_at < ? AND id < ? ORDER BY id LIMIT ?) batch`, olderThan.Unix(), last, pruneEventsBatch).Scan(&hi); err != nil {
					return err
				}
				if hi == 0 {
					n = 0
					return nil
				}
				// By ID alone, so that InnoDB scans (and locks) the
				// primary key's range and nothing past it. An event
				// below hi younger than the cut would have had to wait
				// about the whole retention to commit: none does.
				res, err := t.exec(ctx, `DELETE FROM `+kind.String()+` WHERE id <= ?`, hi)
				if err != nil {
					return err
				}
				n, err = res.RowsAffected()
				return err
			})
			if err != nil {
				return total, mapErr("prune "+kind.String(), err)
			}
			total += n
			if n < int64(pruneEventsBatch) {
				break
			}
		}
	}
	return total, nil
}

// pruneEventsBatch bounds the events one PruneEvents transaction deletes
// (a variable for tests).
var pruneEventsBatch = 1000

// FetchEntries implements datastore.DataStore.
func (s *Store) FetchEntries(ctx context.Context, ids []string) ([]*types.Entry, error) {
	var out []*types.Entry
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxInList)]
		ids = ids[len(chunk):]
		w := &where{}
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		w.add("e.id IN ("+placeholders(len(chunk))+")", args...)
		err := s.read(ctx, func(t txn) error {
			entries, err := loadEntries(ctx, t, w, 0)
			out = append(out, entries...)
			return err
		})
		if err != nil {
			return nil, mapErr("fetch entries", err)
		}
	}
	// Each chunk is in ID order; ids need not be sorted.
	slices.SortFunc(out, func(a, b *types.Entry) int { return strings.Compare(a.Id, b.Id) })
	return out, nil
}

// placeholders is "?, ?, ..." n times.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}

// DeleteAttestedNodeIf implements datastore.DataStore. The row is locked
// as it is read (SQLite has one writer), so the node deleted is the one
// whose serials were compared.
func (s *Store) DeleteAttestedNodeIf(ctx context.Context, spiffeID string, expect datastore.NodeSerials) (*datastore.AttestedNode, error) {
	var out *datastore.AttestedNode
	err := s.write(ctx, func(t txn) error {
		var cur datastore.NodeSerials
		err := t.queryRow(ctx, `SELECT serial_number, new_serial_number FROM attested_nodes WHERE spiffe_id = ?`+t.forUpdate(),
			spiffeID).Scan(&cur.CertSerial, &cur.NewCertSerial)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("node %q: %w", spiffeID, datastore.ErrNotFound)
		case err != nil:
			return err
		}
		if cur != expect {
			return fmt.Errorf("node %q: its serials changed since it was read: %w", spiffeID, datastore.ErrConflict)
		}
		if out, err = fetchNode(ctx, t, spiffeID); err != nil {
			return err
		}
		return deleteNode(ctx, t, spiffeID)
	})
	if err != nil {
		return nil, mapErr("delete attested node", err)
	}
	return out, nil
}
