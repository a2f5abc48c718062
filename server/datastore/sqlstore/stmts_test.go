package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestStatementCache: a query is prepared once the transaction that first
// ran it has ended, then reused; many transactions doing the same on
// SQLite's single writer connection and the reader pool at once finish
// (preparing inside a transaction would deadlock the writer pool); the
// cache stops growing at its bound.
func TestStatementCache(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Config{DatabaseType: SQLite, ConnectionString: filepath.Join(t.TempDir(), "ds.sqlite3")})
	const q = `SELECT revision FROM entries_revision WHERE id = 1`
	if s.rStmts.lookup(q) != nil {
		t.Fatal("prepared before use")
	}
	if _, err := s.EntriesRevision(ctx); err != nil {
		t.Fatal(err)
	}
	if s.rStmts.lookup(q) == nil {
		t.Fatal("not prepared after its first use")
	}
	if _, err := s.EntriesRevision(ctx); err != nil {
		t.Fatalf("through the prepared statement: %v", err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i := range 2 * maxCachedStmts {
			wg.Add(2)
			// Distinct query texts, so that every transaction misses.
			write := fmt.Sprintf("UPDATE entries_revision SET revision = revision + %d WHERE id = 1", i%7+1)
			read := fmt.Sprintf("SELECT revision + %d FROM entries_revision WHERE id = 1", i)
			go func() {
				defer wg.Done()
				if err := s.write(ctx, func(t txn) error { _, err := t.exec(ctx, write); return err }); err != nil {
					panic(err)
				}
			}()
			go func() {
				defer wg.Done()
				var n int64
				if err := s.read(ctx, func(t txn) error { return t.queryRow(ctx, read).Scan(&n) }); err != nil {
					panic(err)
				}
			}()
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("transactions preparing statements deadlocked")
	}
	for _, c := range []*stmtCache{s.rStmts, s.wStmts} {
		if n := len(c.m); n > maxCachedStmts {
			t.Errorf("%d statements cached, bound %d", n, maxCachedStmts)
		}
	}
}
