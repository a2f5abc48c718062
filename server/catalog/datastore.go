package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	// SPIRE's "sql" plugin_data keys; sqlstore.Config says what each does.
	var data struct {
		DatabaseType       string  `hcl:"database_type"`
		ConnectionString   string  `hcl:"connection_string"`
		ROConnectionString string  `hcl:"ro_connection_string"`
		RootCAPath         string  `hcl:"root_ca_path"`
		ClientCertPath     string  `hcl:"client_cert_path"`
		ClientKeyPath      string  `hcl:"client_key_path"`
		MaxOpenConns       *int    `hcl:"max_open_conns"`
		MaxIdleConns       *int    `hcl:"max_idle_conns"`
		ConnMaxLifetime    *string `hcl:"conn_max_lifetime"`
		DisableMigration   bool    `hcl:"disable_migration"`
		LogSQL             bool    `hcl:"log_sql"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.DatabaseType == "" {
		return nil, p.Errorf("database_type", "is required (sqlite3, postgres or mysql)")
	}
	if data.ConnectionString == "" {
		return nil, p.Errorf("connection_string", "is required")
	}
	cfg := sqlstore.Config{
		DatabaseType:       data.DatabaseType,
		ConnectionString:   data.ConnectionString,
		ROConnectionString: data.ROConnectionString,
		RootCAPath:         data.RootCAPath,
		ClientCertPath:     data.ClientCertPath,
		ClientKeyPath:      data.ClientKeyPath,
		MaxOpenConns:       data.MaxOpenConns,
		MaxIdleConns:       data.MaxIdleConns,
		DisableMigration:   data.DisableMigration,
		LogSQL:             data.LogSQL,
		Log:                deps.Log.With("subsystem", "datastore"),
	}
	if data.ConnMaxLifetime != nil {
		d, err := time.ParseDuration(*data.ConnMaxLifetime)
		if err != nil {
			return nil, p.Errorf("conn_max_lifetime", "failed to parse %q: %v (a Go duration, such as \"1h\")", *data.ConnMaxLifetime, err)
		}
		cfg.ConnMaxLifetime = d
	}
	ds, err := sqlstore.Open(ctx, cfg)
	if err != nil {
		var ke *sqlstore.KeyError
		if errors.As(err, &ke) {
			return nil, p.Errorf(ke.Key, "%s", ke.Msg)
		}
		// The "server: " prefix is what the server printed before the
		// catalog existed; operators and tests match it.
		return nil, fmt.Errorf("server: %w", err)
	}
	return ds, nil
}
