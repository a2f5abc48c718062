package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

const nodeCols = `n.spiffe_id, n.data_type, n.serial_number, n.expires_at, n.new_serial_number,
	n.new_expires_at, n.can_reattest`

// CreateAttestedNode implements datastore.DataStore.
func (s *Store) CreateAttestedNode(ctx context.Context, n *datastore.AttestedNode) error {
	if n == nil || n.SPIFFEID == "" {
		return errors.New("sqlstore: create attested node: missing SPIFFE ID")
	}
	err := s.write(ctx, func(t txn) error {
		if err := spendJoinToken(ctx, t, n.SpendJoinToken); err != nil {
			return err
		}
		_, err := t.exec(ctx, `INSERT INTO attested_nodes (spiffe_id, data_type, serial_number, expires_at,
			new_serial_number, new_expires_at, can_reattest) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			n.SPIFFEID, n.AttestationType, n.CertSerial, n.CertNotAfter, n.NewCertSerial, n.NewCertNotAfter, n.CanReattest)
		if err != nil {
			return err
		}
		if n.Selectors != nil {
			if err := replaceNodeSelectors(ctx, t, n.SPIFFEID, n.Selectors); err != nil {
				return err
			}
		}
		return appendEvent(ctx, t, datastore.NodeEvents, n.SPIFFEID)
	})
	return mapErr("create attested node", err)
}

// FetchAttestedNode implements datastore.DataStore.
func (s *Store) FetchAttestedNode(ctx context.Context, spiffeID string) (*datastore.AttestedNode, error) {
	var out *datastore.AttestedNode
	err := s.read(ctx, func(t txn) (err error) {
		out, err = fetchNode(ctx, t, spiffeID)
		return err
	})
	if err != nil {
		return nil, mapErr("fetch attested node", err)
	}
	return out, nil
}

// ListAttestedNodes implements datastore.DataStore. Nodes come in SPIFFE ID
// order, with their selectors.
func (s *Store) ListAttestedNodes(ctx context.Context, req *datastore.ListAttestedNodesRequest) ([]*datastore.AttestedNode, string, error) {
	w, err := nodeFilter(req)
	if err != nil {
		return nil, "", fmt.Errorf("sqlstore: list attested nodes: %w", err)
	}
	var p *datastore.Pagination
	var c datastore.DataConsistency
	if req != nil {
		p, c = req.Pagination, req.DataConsistency
	}
	limit, err := page(p, "n.spiffe_id", w)
	if err != nil {
		return nil, "", err
	}
	var nodes []*datastore.AttestedNode
	err = s.readMaybeStale(ctx, c, func(t txn) (err error) {
		nodes, err = loadNodes(ctx, t, w, limit)
		return err
	})
	if err != nil {
		return nil, "", mapErr("list attested nodes", err)
	}
	next := ""
	if limit > 0 && len(nodes) == limit {
		nodes = nodes[:limit-1]
		next = encodePageToken(nodes[len(nodes)-1].SPIFFEID)
	}
	return nodes, next, nil
}

// CountAttestedNodes implements datastore.DataStore; it ignores pagination.
func (s *Store) CountAttestedNodes(ctx context.Context, req *datastore.ListAttestedNodesRequest) (int32, error) {
	w, err := nodeFilter(req)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: count attested nodes: %w", err)
	}
	var n int32
	err = s.read(ctx, func(t txn) error {
		return t.queryRow(ctx, `SELECT COUNT(*) FROM attested_nodes n WHERE `+w.sql(), w.args...).Scan(&n)
	})
	if err != nil {
		return 0, mapErr("count attested nodes", err)
	}
	return n, nil
}

// UpdateAttestedNode implements datastore.DataStore. The condition is in
// the UPDATE itself, so the engine decides the race: PostgreSQL re-checks
// the WHERE on the row a concurrent writer committed, InnoDB's UPDATE reads
// the latest row whatever the isolation level, and SQLite has one writer.
// Only a write that matched nothing asks which of absent or changed.
func (s *Store) UpdateAttestedNode(ctx context.Context, n *datastore.AttestedNode, expect datastore.NodeSerials) error {
	if n == nil || n.SPIFFEID == "" {
		return errors.New("sqlstore: update attested node: missing SPIFFE ID")
	}
	err := s.write(ctx, func(t txn) error {
		if err := spendJoinToken(ctx, t, n.SpendJoinToken); err != nil {
			return err
		}
		res, err := t.exec(ctx, `UPDATE attested_nodes SET data_type = ?, serial_number = ?, expires_at = ?,
			new_serial_number = ?, new_expires_at = ?, can_reattest = ?
			WHERE spiffe_id = ? AND serial_number = ? AND new_serial_number = ?`,
			n.AttestationType, n.CertSerial, n.CertNotAfter, n.NewCertSerial, n.NewCertNotAfter, n.CanReattest,
			n.SPIFFEID, expect.CertSerial, expect.NewCertSerial)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return nodeMissOrConflict(ctx, t, n.SPIFFEID)
		}
		if n.Selectors != nil {
			if err := replaceNodeSelectors(ctx, t, n.SPIFFEID, n.Selectors); err != nil {
				return err
			}
		}
		return appendEvent(ctx, t, datastore.NodeEvents, n.SPIFFEID)
	})
	return mapErr("update attested node", err)
}

// nodeMissOrConflict tells why a conditional node update matched no row:
// ErrNotFound when the node is absent, ErrConflict when its serials are no
// longer the ones the caller read.
func nodeMissOrConflict(ctx context.Context, t txn, spiffeID string) error {
	var one int
	err := t.queryRow(ctx, `SELECT 1 FROM attested_nodes WHERE spiffe_id = ?`, spiffeID).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("node %q: %w", spiffeID, datastore.ErrNotFound)
	case err != nil:
		return err
	}
	return fmt.Errorf("node %q: its serials changed since it was read: %w", spiffeID, datastore.ErrConflict)
}

// DeleteAttestedNode implements datastore.DataStore.
func (s *Store) DeleteAttestedNode(ctx context.Context, spiffeID string) (*datastore.AttestedNode, error) {
	var out *datastore.AttestedNode
	err := s.write(ctx, func(t txn) error {
		var err error
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

// deleteNode removes the node, its selectors, and records the event.
func deleteNode(ctx context.Context, t txn, spiffeID string) error {
	if _, err := t.exec(ctx, `DELETE FROM attested_nodes WHERE spiffe_id = ?`, spiffeID); err != nil {
		return err
	}
	if _, err := t.exec(ctx, `DELETE FROM node_selectors WHERE spiffe_id = ?`, spiffeID); err != nil {
		return err
	}
	return appendEvent(ctx, t, datastore.NodeEvents, spiffeID)
}

// SetNodeSelectors implements datastore.DataStore.
func (s *Store) SetNodeSelectors(ctx context.Context, spiffeID string, selectors []*types.Selector) error {
	if spiffeID == "" {
		return errors.New("sqlstore: set node selectors: missing SPIFFE ID")
	}
	err := s.write(ctx, func(t txn) error {
		if err := replaceNodeSelectors(ctx, t, spiffeID, selectors); err != nil {
			return err
		}
		return appendEvent(ctx, t, datastore.NodeEvents, spiffeID)
	})
	return mapErr("set node selectors", err)
}

// GetNodeSelectors implements datastore.DataStore. Selectors come sorted
// by type, then value; a node without selectors yields an empty list.
func (s *Store) GetNodeSelectors(ctx context.Context, spiffeID string) ([]*types.Selector, error) {
	var out []*types.Selector
	err := s.read(ctx, func(t txn) error {
		return eachRow(ctx, t, `SELECT type, value FROM node_selectors WHERE spiffe_id = ?`, []any{spiffeID},
			func(scan func(...any) error) error {
				sel := &types.Selector{}
				if err := scan(&sel.Type, &sel.Value); err != nil {
					return err
				}
				out = append(out, sel)
				return nil
			})
	})
	if err != nil {
		return nil, mapErr("get node selectors", err)
	}
	sortSelectors(out)
	return out, nil
}

func replaceNodeSelectors(ctx context.Context, t txn, spiffeID string, selectors []*types.Selector) error {
	if _, err := t.exec(ctx, `DELETE FROM node_selectors WHERE spiffe_id = ?`, spiffeID); err != nil {
		return err
	}
	for _, sel := range uniqueSelectors(selectors) {
		if _, err := t.exec(ctx, `INSERT INTO node_selectors (spiffe_id, type, value) VALUES (?, ?, ?)`,
			spiffeID, sel.Type, sel.Value); err != nil {
			return err
		}
	}
	return nil
}

// nodeFilter turns a request into conditions on attested_nodes n.
func nodeFilter(req *datastore.ListAttestedNodesRequest) (*where, error) {
	w := &where{}
	if req == nil {
		return w, nil
	}
	if req.ByAttestationType != "" {
		w.add("n.data_type = ?", req.ByAttestationType)
	}
	if req.ByBanned != nil {
		// Banned is derived (both serials empty), as in SPIRE.
		if *req.ByBanned {
			w.add("n.serial_number = '' AND n.new_serial_number = ''")
		} else {
			w.add("(n.serial_number <> '' OR n.new_serial_number <> '')")
		}
	}
	if req.ByCanReattest != nil {
		w.add("n.can_reattest = ?", *req.ByCanReattest)
	}
	if req.ExpiresBefore != 0 {
		w.add("n.expires_at < ?", req.ExpiresBefore)
	}
	if f := req.BySelectors; f != nil {
		if err := setMatch("node_selectors", "spiffe_id", "n.spiffe_id", []string{"type", "value"},
			selectorMembers(f.Selectors), f.Match, w); err != nil {
			return nil, fmt.Errorf("by selectors: %w", err)
		}
	}
	return w, nil
}

func fetchNode(ctx context.Context, t txn, spiffeID string) (*datastore.AttestedNode, error) {
	w := &where{}
	w.add("n.spiffe_id = ?", spiffeID)
	nodes, err := loadNodes(ctx, t, w, 0)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("node %q: %w", spiffeID, datastore.ErrNotFound)
	}
	return nodes[0], nil
}

// loadNodes reads the nodes w selects, in SPIFFE ID order, with their
// selectors (two queries whatever the size).
func loadNodes(ctx context.Context, t txn, w *where, limit int) ([]*datastore.AttestedNode, error) {
	cond := w.sql() + " ORDER BY n.spiffe_id" + limitSQL(limit)
	var nodes []*datastore.AttestedNode
	byID := map[string]*datastore.AttestedNode{}
	err := eachRow(ctx, t, `SELECT `+nodeCols+` FROM attested_nodes n WHERE `+cond, w.args,
		func(scan func(...any) error) error {
			n := &datastore.AttestedNode{}
			if err := scan(&n.SPIFFEID, &n.AttestationType, &n.CertSerial, &n.CertNotAfter,
				&n.NewCertSerial, &n.NewCertNotAfter, &n.CanReattest); err != nil {
				return err
			}
			nodes = append(nodes, n)
			byID[n.SPIFFEID] = n
			return nil
		})
	if err != nil || len(nodes) == 0 {
		return nil, err
	}
	err = eachRow(ctx, t, `SELECT x.spiffe_id, x.type, x.value FROM node_selectors x WHERE x.spiffe_id IN (`+
		t.inPage(`SELECT n.spiffe_id FROM attested_nodes n WHERE `+cond)+`)`, w.args,
		func(scan func(...any) error) error {
			var id string
			sel := &types.Selector{}
			if err := scan(&id, &sel.Type, &sel.Value); err != nil {
				return err
			}
			if n := byID[id]; n != nil {
				n.Selectors = append(n.Selectors, sel)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		sortSelectors(n.Selectors)
	}
	return nodes, nil
}
