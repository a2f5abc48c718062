package sqlstore

import (
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// openPostgres opens a pool for conn (connection_string, or
// ro_connection_string when key says so).
func openPostgres(cfg Config, key, conn string) (*sql.DB, error) {
	if conn == "" {
		return nil, errors.New("sqlstore: postgres: connection_string is empty")
	}
	pc, err := pgx.ParseConfig(conn)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		if err := requirePostgresTLS(pc, tc); err != nil {
			return nil, keyErr(key, "%v", err)
		}
	}
	db := stdlib.OpenDB(*pc)
	cfg.tunePool(db)
	return db, nil
}

// requirePostgresTLS makes every host pc may try use tc, verified against
// that host's name, and drops the plaintext attempts that sslmode=prefer
// or allow would make: root_ca_path and a client certificate ask for an
// authenticated connection, which a silent fallback would defeat.
func requirePostgresTLS(pc *pgx.ConnConfig, tc *tls.Config) error {
	if pc.TLSConfig == nil {
		return fmt.Errorf("the connection to %s would not use TLS (sslmode=disable, or a Unix socket), but root_ca_path or client_cert_path is set", pc.Host)
	}
	pc.TLSConfig = withServerName(tc, pc.Host)
	var keep []*pgconn.FallbackConfig
	for _, f := range pc.Fallbacks {
		if f.TLSConfig == nil {
			continue
		}
		f.TLSConfig = withServerName(tc, f.Host)
		keep = append(keep, f)
	}
	pc.Fallbacks = keep
	return nil
}

func withServerName(tc *tls.Config, host string) *tls.Config {
	c := tc.Clone()
	c.ServerName = host
	return c
}

// isPostgresUnique reports a unique_violation.
func isPostgresUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
