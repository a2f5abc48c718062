package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

const caJournalColumns = `name, active_x509_authority_id, expires_at, data`

func scanCAJournal(row interface{ Scan(...any) error }) (*datastore.CAJournal, error) {
	j := new(datastore.CAJournal)
	if err := row.Scan(&j.Name, &j.ActiveX509AuthorityID, &j.ExpiresAt, &j.Data); err != nil {
		return nil, err
	}
	return j, nil
}

// FetchCAJournal implements datastore.DataStore.
func (s *Store) FetchCAJournal(ctx context.Context, name string) (*datastore.CAJournal, error) {
	var j *datastore.CAJournal
	err := s.read(ctx, func(t txn) error {
		var err error
		j, err = scanCAJournal(t.queryRow(ctx, `SELECT `+caJournalColumns+` FROM ca_journal WHERE name = ?`, name))
		return err
	})
	if err != nil {
		return nil, mapErr("fetch CA journal", err)
	}
	return j, nil
}

// FindCAJournal implements datastore.DataStore. The IDs are tried in
// order; an empty one matches nothing (rows written before the column
// existed hold "").
func (s *Store) FindCAJournal(ctx context.Context, ids []string) (*datastore.CAJournal, error) {
	var j *datastore.CAJournal
	err := s.read(ctx, func(t txn) error {
		for _, id := range ids {
			if id == "" {
				continue
			}
			var err error
			// Two servers cannot hold the same key, so at most one row
			// matches; the order only makes a corrupt database's answer
			// stable.
			j, err = scanCAJournal(t.queryRow(ctx, `SELECT `+caJournalColumns+` FROM ca_journal
				WHERE active_x509_authority_id = ? ORDER BY name LIMIT 1`, id))
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		return sql.ErrNoRows
	})
	if err != nil {
		return nil, mapErr("find CA journal", err)
	}
	return j, nil
}

// SetCAJournal implements datastore.DataStore.
func (s *Store) SetCAJournal(ctx context.Context, j *datastore.CAJournal) error {
	if j == nil || j.Name == "" {
		return errors.New("sqlstore: set CA journal: empty name")
	}
	data := j.Data
	if data == nil {
		data = []byte{}
	}
	err := s.write(ctx, func(t txn) error {
		q := `INSERT INTO ca_journal (` + caJournalColumns + `) VALUES (?, ?, ?, ?) `
		if t.eng == mysqlEngine {
			q += `ON DUPLICATE KEY UPDATE active_x509_authority_id = VALUES(active_x509_authority_id),
				expires_at = VALUES(expires_at), data = VALUES(data)`
		} else {
			q += `ON CONFLICT (name) DO UPDATE SET active_x509_authority_id = excluded.active_x509_authority_id,
				expires_at = excluded.expires_at, data = excluded.data`
		}
		_, err := t.exec(ctx, q, j.Name, j.ActiveX509AuthorityID, j.ExpiresAt, data)
		return err
	})
	return mapErr("set CA journal", err)
}

// PruneCAJournals implements datastore.DataStore. One statement, so that
// every server sharing the database may run it: the database decides.
func (s *Store) PruneCAJournals(ctx context.Context, expiresBefore time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(t txn) error {
		res, err := t.exec(ctx, `DELETE FROM ca_journal WHERE expires_at > 0 AND expires_at < ?`, expiresBefore.Unix())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, mapErr("prune CA journals", err)
	}
	return int(n), nil
}
