// Package sqlitetest gives tests a real SQLite datastore in a temporary
// directory, closed when the test ends.
package sqlitetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
)

// Open opens a fresh SQLite store for tb.
func Open(tb testing.TB) *sqlstore.Store {
	tb.Helper()
	st, err := sqlstore.Open(context.Background(), sqlstore.Config{DatabaseType: sqlstore.SQLite, ConnectionString: filepath.Join(tb.TempDir(), "ds.sqlite3")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}
