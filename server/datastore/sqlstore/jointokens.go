package sqlstore

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// CreateJoinToken implements datastore.DataStore. The expiry is kept to the
// second.
func (s *Store) CreateJoinToken(ctx context.Context, t *datastore.JoinToken) error {
	if t == nil || t.Token == "" {
		return errors.New("sqlstore: create join token: empty token")
	}
	err := s.write(ctx, func(tx txn) error {
		_, err := tx.exec(ctx, `INSERT INTO join_tokens (token, expires_at) VALUES (?, ?)`, t.Token, t.ExpiresAt.Unix())
		return err
	})
	return mapErr("create join token", err)
}

// FetchJoinToken implements datastore.DataStore.
func (s *Store) FetchJoinToken(ctx context.Context, token string) (*datastore.JoinToken, error) {
	var expiresAt int64
	err := s.read(ctx, func(tx txn) error {
		return tx.queryRow(ctx, `SELECT expires_at FROM join_tokens WHERE token = ?`, token).Scan(&expiresAt)
	})
	if err != nil {
		return nil, mapErr("fetch join token", err)
	}
	return &datastore.JoinToken{Token: token, ExpiresAt: time.Unix(expiresAt, 0)}, nil
}

// spendJoinToken deletes token within a node write; a write that names
// none (empty token) spends nothing. The DELETE alone
// decides a race on every engine: SQLite has one writer, and on
// PostgreSQL and InnoDB a second DELETE of the row waits on the first's
// lock and then finds it gone, so it affects no row.
func spendJoinToken(ctx context.Context, t txn, token string) error {
	if token == "" {
		return nil
	}
	res, err := t.exec(ctx, `DELETE FROM join_tokens WHERE token = ?`, token)
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil {
		return err
	} else if k == 0 {
		return datastore.ErrJoinTokenSpent
	}
	return nil
}

// PruneJoinTokens implements datastore.DataStore.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) error {
	err := s.write(ctx, func(tx txn) error {
		_, err := tx.exec(ctx, `DELETE FROM join_tokens WHERE expires_at < ?`, expiredBefore.Unix())
		return err
	})
	return mapErr("prune join tokens", err)
}
