package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStmts bounds the statement cache. The package's queries come
// from a fixed set of shapes, but a few are built for the length of an
// argument list; past the bound the rest run unprepared, as before.
const maxCachedStmts = 256

// stmtCache prepares each query once per pool: a fleet's syncs run the same
// few queries thousands of times a second, and preparing them each time
// (SQLite parses and plans every call) was a tenth of the server's CPU.
// database/sql keeps a statement prepared per connection and reuses it in
// every transaction on that connection.
//
// A query is prepared after the transaction that first ran it has ended,
// never inside one: preparing takes a connection from the pool, and a
// transaction that waited for one while holding its own could deadlock the
// pool (SQLite's writer pool has a single connection).
type stmtCache struct {
	db *sql.DB
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: make(map[string]*sql.Stmt)} }

// lookup returns the prepared statement for query, or nil.
func (c *stmtCache) lookup(query string) *sql.Stmt {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[query]
}

// prepare prepares the queries not cached yet, while there is room. Call
// it holding no connection of the pool. A failure leaves the query
// unprepared: it ran, and will run again, without a statement.
func (c *stmtCache) prepare(ctx context.Context, queries []string) {
	if c == nil {
		return
	}
	for _, q := range queries {
		c.mu.RLock()
		_, have := c.m[q]
		full := len(c.m) >= maxCachedStmts
		c.mu.RUnlock()
		if have || full {
			continue
		}
		st, err := c.db.PrepareContext(context.WithoutCancel(ctx), q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, have := c.m[q]; have || len(c.m) >= maxCachedStmts {
			st.Close()
		} else {
			c.m[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for q, st := range c.m {
		err = errors.Join(err, st.Close())
		delete(c.m, q)
	}
	return err
}
