package sqlstore

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Database types accepted in Config.DatabaseType (SPIRE's names).
const (
	SQLite   = "sqlite3"
	Postgres = "postgres"
	MySQL    = "mysql"
)

// Config selects and locates the database. Its fields are the keys of
// SPIRE's "sql" DataStore plugin_data; each comment names the key.
type Config struct {
	// DatabaseType (database_type) is "sqlite3", "postgres" or "mysql".
	DatabaseType string
	// ConnectionString (connection_string) is a file path (or file: URI)
	// for SQLite, a libpq / pgx connection string or URL for PostgreSQL,
	// and a go-sql-driver/mysql DSN with parseTime=true for MySQL
	// ("user:pw@tcp(host:3306)/db?parseTime=true").
	ConnectionString string
	// ROConnectionString (ro_connection_string), when set, locates a
	// read-only replica in the same format. Only reads that ask for it
	// (datastore.TolerateStale: the events polls) go there, and to the
	// primary while it fails them; it is never migrated.
	ROConnectionString string
	// MaxOpenConns and MaxIdleConns (max_open_conns, max_idle_conns) bound
	// each connection pool; nil keeps the default (SPIRE's 100 on
	// PostgreSQL and MySQL). SQLite's single writer connection is not
	// affected: they size its reader pools.
	MaxOpenConns, MaxIdleConns *int
	// ConnMaxLifetime (conn_max_lifetime) closes connections older than
	// this; zero keeps them.
	ConnMaxLifetime time.Duration
	// DisableMigration (disable_migration) makes Open refuse a database
	// whose schema is older than this code instead of upgrading it; a new,
	// empty database is still initialized, as SPIRE does.
	DisableMigration bool
	// LogSQL (log_sql) logs every statement, without its arguments, at
	// debug level.
	LogSQL bool
	// RootCAPath (root_ca_path) is a PEM bundle that the database server's
	// certificate must chain to; ClientCertPath and ClientKeyPath
	// (client_cert_path, client_key_path) are a client certificate and key
	// to present. Any of them turns TLS on and makes it required. They
	// apply to PostgreSQL and MySQL, not to SQLite.
	RootCAPath, ClientCertPath, ClientKeyPath string
	// Log receives migration and maintenance messages; nil discards them.
	Log *slog.Logger
}

// KeyError is a configuration value that Open refuses. Key is its name in
// the plugin_data block, so that the caller can point at the file and line.
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return "sqlstore: " + e.Key + ": " + e.Msg }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// useTLS reports whether a TLS key is set.
func (c *Config) useTLS() bool {
	return c.RootCAPath != "" || c.ClientCertPath != "" || c.ClientKeyPath != ""
}

// tlsConfig builds the client TLS configuration the TLS keys ask for, or
// nil when none is set. Unlike SPIRE, which ignores a certificate without
// its key, a half-given pair is an error, since the server would then see
// no client certificate at all.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.useTLS() {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.RootCAPath != "" {
		pem, err := os.ReadFile(c.RootCAPath)
		if err != nil {
			return nil, keyErr("root_ca_path", "cannot read the root CA: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, keyErr("root_ca_path", "no PEM certificate in %s", c.RootCAPath)
		}
		conf.RootCAs = pool
	}
	switch {
	case c.ClientCertPath != "" && c.ClientKeyPath == "":
		return nil, keyErr("client_key_path", "is required with client_cert_path")
	case c.ClientCertPath == "" && c.ClientKeyPath != "":
		return nil, keyErr("client_cert_path", "is required with client_key_path")
	case c.ClientCertPath != "":
		cert, err := tls.LoadX509KeyPair(c.ClientCertPath, c.ClientKeyPath)
		if err != nil {
			return nil, keyErr("client_cert_path", "cannot load the client certificate and key: %v", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// tunePool applies the pool keys to a PostgreSQL or MySQL pool, with
// SPIRE's defaults for what is unset.
func (c *Config) tunePool(db *sql.DB) {
	const spireDefault = 100
	db.SetMaxOpenConns(intOr(c.MaxOpenConns, spireDefault))
	db.SetMaxIdleConns(intOr(c.MaxIdleConns, spireDefault))
	// SPIRE closes connections idle for 30 s, so that a burst's pool
	// shrinks back.
	db.SetConnMaxIdleTime(30 * time.Second)
	db.SetConnMaxLifetime(c.ConnMaxLifetime)
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
