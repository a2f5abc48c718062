package catalog

import (
	"context"
	"fmt"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
)

// DataStores are the DataStore plugins: SPIRE's "sql".
var DataStores = catalog.Table[Deps, datastore.DataStore]{
	Type: config.TypeDataStore,
	Builtins: []catalog.Builtin[Deps, datastore.DataStore]{
		{Name: "sql", New: newSQLDataStore},
	},
}

func newSQLDataStore(ctx context.Context, p hclconf.Plugin, deps Deps) (datastore.DataStore, error) {
	var data struct {
		DatabaseType     string `hcl:"database_type"`
		ConnectionString string `hcl:"connection_string"`
		// Accepted for compatibility with SPIRE configs.
		ROConnectionString string `hcl:"ro_connection_string"`
		MaxOpenConns       int    `hcl:"max_open_conns"`
		MaxIdleConns       int    `hcl:"max_idle_conns"`
		ConnMaxLifetime    string `hcl:"conn_max_lifetime"`
		DisableMigration   bool   `hcl:"disable_migration"`
		LogSQL             bool   `hcl:"log_sql"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.DatabaseType == "" {
		return nil, p.Errorf("database_type", "is required (sqlite3 or postgres)")
	}
	if data.ConnectionString == "" {
		return nil, p.Errorf("connection_string", "is required")
	}
	ds, err := sqlstore.Open(ctx, sqlstore.Config{DatabaseType: data.DatabaseType, ConnectionString: data.ConnectionString, Log: deps.Log.With("subsystem", "datastore")})
	if err != nil {
		// The "server: " prefix is what the server printed before the
		// catalog existed; operators and tests match it.
		return nil, fmt.Errorf("server: %w", err)
	}
	return ds, nil
}
