package api

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// openSQLite opens a real SQLite store in a temporary directory for the
// test, closed when it ends.
func openSQLite(t *testing.T) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), sqlstore.Config{DatabaseType: sqlstore.SQLite, ConnectionString: filepath.Join(t.TempDir(), "ds.sqlite3")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// workloadEntry is an entry for path under /agent with a unix selector.
func workloadEntry(path string) *types.Entry {
	return &types.Entry{SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: path}, ParentId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/agent"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}}
}
