package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// MySQL error numbers the store acts on.
const (
	mysqlDupEntry     = 1062 // ER_DUP_ENTRY
	mysqlLockDeadlock = 1213 // ER_LOCK_DEADLOCK
)

// openMySQL opens a pool for conn (connection_string, or
// ro_connection_string when key says so), a go-sql-driver/mysql DSN.
func openMySQL(cfg Config, key, conn string, log *slog.Logger) (*sql.DB, error) {
	if conn == "" {
		return nil, errors.New("sqlstore: mysql: connection_string is empty")
	}
	mc, err := mysql.ParseDSN(conn)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	if !mc.ParseTime {
		// SPIRE's check, kept so that a configuration SPIRE refuses is
		// refused here too.
		return nil, keyErr(key, "invalid mysql config: missing parseTime=true param")
	}
	// RowsAffected must count the rows an UPDATE matched, not only those
	// it changed: an update that rewrites a node with its current values
	// found the node.
	mc.ClientFoundRows = true
	if mc.Params == nil {
		mc.Params = map[string]string{}
	}
	if _, set := mc.Params["sql_mode"]; !set {
		// Strict mode turns an over-long value into an error rather than a
		// truncation, which would silently corrupt an ID; the server's
		// other modes stay.
		mc.Params["sql_mode"] = "CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')"
	}
	if !strings.Contains(conn, "interpolateParams=") {
		// Arguments are escaped into the query text by the driver, so that
		// a query is one round trip and no server-side statement is left
		// per connection: max_prepared_stmt_count is shared by every
		// server on the database.
		mc.InterpolateParams = true
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		if mc.TLSConfig != "" && mc.TLSConfig != "false" {
			log.Warn("sqlstore: mysql: root_ca_path, client_cert_path and client_key_path replace the tls parameter of the connection string", "key", key, "tls", mc.TLSConfig)
		}
		if mc.Net == "unix" {
			return nil, keyErr(key, "reaches the server over a Unix socket, which this store does not run TLS over, but root_ca_path or client_cert_path is set")
		}
		// The driver names the server from the address when ServerName
		// is empty, and verifies its certificate against RootCAs.
		mc.TLS = tc
		mc.TLSConfig = ""
		mc.AllowFallbackToPlaintext = false
	}
	mc.Logger = driverLogger{log}
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	db := sql.OpenDB(connector)
	cfg.tunePool(db)
	return db, nil
}

// mysqlCollation picks the binary, NO PAD utf8mb4 collation the server has,
// so that keys compare and sort byte by byte as on SQLite and PostgreSQL
// (collated "C"), and "a" and "a " stay two keys. MySQL 8 and MariaDB name
// it differently; utf8mb4_bin, which pads, is the last resort.
func mysqlCollation(ctx context.Context, db *sql.DB, log *slog.Logger) (string, error) {
	for _, name := range []string{"utf8mb4_0900_bin", "utf8mb4_nopad_bin"} {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.COLLATIONS WHERE COLLATION_NAME = ?`, name).Scan(&n); err != nil {
			return "", fmt.Errorf("sqlstore: mysql: list collations: %w", err)
		}
		if n > 0 {
			return name, nil
		}
	}
	log.Warn("sqlstore: mysql: the server has no NO PAD binary utf8mb4 collation (MySQL 8 or MariaDB 10.2 have one): keys that differ only in trailing spaces will collide")
	return "utf8mb4_bin", nil
}

// Migrations on MySQL take a named lock so that servers starting together
// migrate one at a time; DDL commits implicitly, so a transaction cannot.
const mysqlMigrationLock = "spire-hw-sqlstore-migration"

func mysqlLock(ctx context.Context, conn *sql.Conn) error {
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 300)`, mysqlMigrationLock).Scan(&got); err != nil {
		return err
	}
	if got.Int64 != 1 {
		return errors.New("another server held the migration lock for 5 minutes")
	}
	return nil
}

func mysqlUnlock(conn *sql.Conn) {
	_, _ = conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK(?)`, mysqlMigrationLock)
}

func mysqlErrNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// driverLogger sends what the driver reports (broken connections, mostly)
// to the store's logger instead of the standard logger.
type driverLogger struct{ log *slog.Logger }

func (d driverLogger) Print(v ...any) {
	d.log.Warn("sqlstore: mysql driver: " + strings.TrimSpace(fmt.Sprint(v...)))
}
