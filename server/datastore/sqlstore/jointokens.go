package sqlstore

import (
	"context"
	"errors"
	"fmt"
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

// ConsumeJoinToken implements datastore.DataStore. A single DELETE ...
// RETURNING both claims and reads the token, so of concurrent callers only
// the one whose DELETE removed the row gets it. MySQL has no RETURNING:
// there the row is locked, read, then deleted, and a concurrent caller
// waits on the lock and then finds no row.
func (s *Store) ConsumeJoinToken(ctx context.Context, token string, now time.Time) (*datastore.JoinToken, error) {
	var expiresAt int64
	err := s.write(ctx, func(tx txn) error {
		if tx.eng != mysqlEngine {
			return tx.queryRow(ctx, `DELETE FROM join_tokens WHERE token = ? RETURNING expires_at`, token).Scan(&expiresAt)
		}
		if err := tx.queryRow(ctx, `SELECT expires_at FROM join_tokens WHERE token = ? FOR UPDATE`, token).Scan(&expiresAt); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `DELETE FROM join_tokens WHERE token = ?`, token)
		return err
	})
	if err != nil {
		return nil, mapErr("consume join token", err)
	}
	jt := &datastore.JoinToken{Token: token, ExpiresAt: time.Unix(expiresAt, 0)}
	if jt.ExpiresAt.Before(now) {
		return nil, fmt.Errorf("sqlstore: consume join token: %w", datastore.ErrExpired)
	}
	return jt, nil
}

// PruneJoinTokens implements datastore.DataStore.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) error {
	err := s.write(ctx, func(tx txn) error {
		_, err := tx.exec(ctx, `DELETE FROM join_tokens WHERE expires_at < ?`, expiredBefore.Unix())
		return err
	})
	return mapErr("prune join tokens", err)
}
