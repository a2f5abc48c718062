package sqlstore

import (
	"context"
	"errors"
)

// FetchCAJournal implements datastore.DataStore.
func (s *Store) FetchCAJournal(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := s.read(ctx, func(t txn) error {
		return t.queryRow(ctx, `SELECT data FROM ca_journal WHERE name = ?`, name).Scan(&data)
	})
	if err != nil {
		return nil, mapErr("fetch CA journal", err)
	}
	return data, nil
}

// SetCAJournal implements datastore.DataStore.
func (s *Store) SetCAJournal(ctx context.Context, name string, data []byte) error {
	if name == "" {
		return errors.New("sqlstore: set CA journal: empty name")
	}
	if data == nil {
		data = []byte{}
	}
	err := s.write(ctx, func(t txn) error {
		return t.upsert(ctx, "ca_journal", "name", "data", name, data)
	})
	return mapErr("set CA journal", err)
}
