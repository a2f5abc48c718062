package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer version of this code: running older code against it could silently
// drop what it does not know about.
var ErrSchemaTooNew = errors.New("sqlstore: database schema is newer than this server supports")

// migration is one schema step. Statements use engine-neutral SQL with
// type placeholders that dialect fills in.
type migration []string

// dialect fills in the placeholders of a migration statement for eng:
//
//   - {key}: a primary or foreign key. PostgreSQL keys are collated "C" so
//     that paging by key orders the same way as on SQLite (byte order),
//     whatever the database locale.
//   - {str}: a short string that is indexed or has a default, which MySQL
//     cannot give a TEXT column.
//   - {blob}: bytes.
//   - {serial}: an integer primary key the engine numbers, never reusing
//     a number (SQLite's AUTOINCREMENT; a PostgreSQL sequence; InnoDB's
//     counter, which MariaDB 10.2.4+ and MySQL 8 persist across restarts).
//
// MySQL strings that take part in an index are VARCHAR(255), as SPIRE's
// schema has them there: three of them (a selector's entry, type and value)
// make 3060 bytes in utf8mb4, within InnoDB's 3072-byte index key. Its
// tables are InnoDB (for transactions and foreign keys), utf8mb4 with the
// binary collation Open picked (byte order, as elsewhere), and DYNAMIC rows
// (for index keys over 767 bytes).
func dialect(eng engine, collation, stmt string) string {
	var key, str, blob, serial string
	switch eng {
	case sqliteEngine:
		key, str, blob = "TEXT", "TEXT", "BLOB"
		serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
	case postgresEngine:
		key, str, blob = `TEXT COLLATE "C"`, "TEXT", "BYTEA"
		serial = "BIGSERIAL PRIMARY KEY"
	case mysqlEngine:
		// MEDIUMBLOB holds 16 MiB, as SPIRE's bundle and CA journal
		// columns.
		key, str, blob = "VARCHAR(255)", "VARCHAR(255)", "MEDIUMBLOB"
		serial = "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY"
	}
	stmt = strings.NewReplacer("{key}", key, "{str}", str, "{blob}", blob, "{serial}", serial).Replace(stmt)
	if eng == mysqlEngine && strings.HasPrefix(stmt, "CREATE TABLE") {
		stmt += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=" + collation + " ROW_FORMAT=DYNAMIC"
	}
	return stmt
}

// migrations is the ordered schema history; index i upgrades version i to
// i+1. Never edit a released step: append a new one. (Step 1 was last
// edited for MySQL, in ways that leave the SQLite and PostgreSQL schemas
// as they were: {str} is TEXT there, and a table's FOREIGN KEY clause is
// the constraint its column's REFERENCES made.)
var migrations = []migration{
	{
		`CREATE TABLE registered_entries (
			id {key} PRIMARY KEY,
			spiffe_id {key} NOT NULL,
			parent_id {key} NOT NULL,
			x509_svid_ttl INTEGER NOT NULL DEFAULT 0,
			jwt_svid_ttl INTEGER NOT NULL DEFAULT 0,
			admin BOOLEAN NOT NULL DEFAULT FALSE,
			downstream BOOLEAN NOT NULL DEFAULT FALSE,
			expires_at BIGINT NOT NULL DEFAULT 0,
			store_svid BOOLEAN NOT NULL DEFAULT FALSE,
			hint {str} NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL,
			revision_number BIGINT NOT NULL DEFAULT 0,
			unique_key {str} NOT NULL UNIQUE
		)`,
		`CREATE INDEX registered_entries_spiffe_id ON registered_entries (spiffe_id)`,
		`CREATE INDEX registered_entries_parent_id ON registered_entries (parent_id)`,
		`CREATE INDEX registered_entries_hint ON registered_entries (hint)`,
		`CREATE TABLE selectors (
			entry_id {key} NOT NULL,
			type {str} NOT NULL,
			value {str} NOT NULL,
			PRIMARY KEY (entry_id, type, value),
			FOREIGN KEY (entry_id) REFERENCES registered_entries (id) ON DELETE CASCADE
		)`,
		`CREATE INDEX selectors_type_value ON selectors (type, value, entry_id)`,
		`CREATE TABLE dns_names (
			entry_id {key} NOT NULL,
			ord INTEGER NOT NULL,
			value TEXT NOT NULL,
			PRIMARY KEY (entry_id, ord),
			FOREIGN KEY (entry_id) REFERENCES registered_entries (id) ON DELETE CASCADE
		)`,
		`CREATE TABLE federates_with (
			entry_id {key} NOT NULL,
			ord INTEGER NOT NULL,
			trust_domain {str} NOT NULL,
			PRIMARY KEY (entry_id, trust_domain),
			FOREIGN KEY (entry_id) REFERENCES registered_entries (id) ON DELETE CASCADE
		)`,
		`CREATE INDEX federates_with_trust_domain ON federates_with (trust_domain, entry_id)`,
		`CREATE TABLE entries_revision (
			id INTEGER PRIMARY KEY,
			revision BIGINT NOT NULL
		)`,
		`INSERT INTO entries_revision (id, revision) VALUES (1, 0)`,
		`CREATE TABLE attested_nodes (
			spiffe_id {key} PRIMARY KEY,
			data_type {str} NOT NULL,
			serial_number {str} NOT NULL DEFAULT '',
			expires_at BIGINT NOT NULL DEFAULT 0,
			new_serial_number {str} NOT NULL DEFAULT '',
			new_expires_at BIGINT NOT NULL DEFAULT 0,
			can_reattest BOOLEAN NOT NULL DEFAULT FALSE
		)`,
		`CREATE INDEX attested_nodes_data_type ON attested_nodes (data_type)`,
		`CREATE INDEX attested_nodes_expires_at ON attested_nodes (expires_at)`,
		`CREATE TABLE node_selectors (
			spiffe_id {key} NOT NULL,
			type {str} NOT NULL,
			value {str} NOT NULL,
			PRIMARY KEY (spiffe_id, type, value)
		)`,
		`CREATE INDEX node_selectors_type_value ON node_selectors (type, value, spiffe_id)`,
		`CREATE TABLE join_tokens (
			token {key} PRIMARY KEY,
			expires_at BIGINT NOT NULL
		)`,
		`CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at)`,
		`CREATE TABLE bundles (
			trust_domain {key} PRIMARY KEY,
			data {blob} NOT NULL
		)`,
		`CREATE TABLE ca_journal (
			name {key} PRIMARY KEY,
			data {blob} NOT NULL
		)`,
	},
	// 2: federation relationships (SPIRE's federated_trust_domains). The
	// bundle stays in bundles, keyed by the same name, so that deleting a
	// relationship keeps it, as SPIRE does.
	{
		`CREATE TABLE federated_trust_domains (
			trust_domain {key} PRIMARY KEY,
			bundle_endpoint_url TEXT NOT NULL,
			bundle_endpoint_profile TEXT NOT NULL,
			endpoint_spiffe_id {str} NOT NULL DEFAULT ''
		)`,
	},
	// 3: a CA journal per server, as SPIRE's ca_journal rows: servers
	// sharing the database find their own by the authority ID of the X.509
	// CA active when it was written, and prune those whose authorities
	// all expired. The row written before (name "ca") keeps "" and 0
	// until its server claims it.
	{
		`ALTER TABLE ca_journal ADD COLUMN active_x509_authority_id {str} NOT NULL DEFAULT ''`,
		`ALTER TABLE ca_journal ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0`,
		`CREATE INDEX ca_journal_active_x509_authority_id ON ca_journal (active_x509_authority_id)`,
	},
	// 4: change tables (SPIRE's registered_entries_events and
	// attested_node_entries_events). Every entry or node write appends
	// the key it changed in its own transaction; servers sharing the
	// database read the events after the last one they saw to update
	// their caches, and prune those older than prune_events_older_than
	// (created_at, Unix seconds).
	{
		`CREATE TABLE registered_entries_events (
			id {serial},
			created_at BIGINT NOT NULL,
			entry_id {str} NOT NULL
		)`,
		`CREATE INDEX registered_entries_events_created_at ON registered_entries_events (created_at)`,
		`CREATE TABLE attested_node_entries_events (
			id {serial},
			created_at BIGINT NOT NULL,
			spiffe_id {str} NOT NULL
		)`,
		`CREATE INDEX attested_node_entries_events_created_at ON attested_node_entries_events (created_at)`,
	},
}

// schemaVersion is the schema version this code writes.
var schemaVersion = len(migrations)

// migrate applies missing migrations. On SQLite and PostgreSQL they run in
// one transaction: an advisory lock keeps two PostgreSQL servers starting
// at once from both migrating, and SQLite's BEGIN IMMEDIATE does the same.
// MySQL commits at every DDL statement, so there each step commits with
// its version, under a named lock; a step that fails halfway leaves what
// it created for an operator to drop, as SPIRE's MySQL migrations do.
func (s *Store) migrate(ctx context.Context, disabled bool) error {
	var from int
	var err error
	if s.eng == mysqlEngine {
		from, err = s.migrateMySQL(ctx, disabled)
	} else {
		err = s.write(ctx, func(t txn) error {
			if t.eng == postgresEngine {
				if _, err := t.exec(ctx, `SELECT pg_advisory_xact_lock(7283941)`); err != nil {
					return err
				}
			}
			var err error
			if from, err = s.schemaVersionOf(ctx, t, disabled); err != nil {
				return err
			}
			for v := from; v < schemaVersion; v++ {
				if err := s.migrateStep(ctx, t, v); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		var ke *KeyError
		if errors.Is(err, ErrSchemaTooNew) || errors.As(err, &ke) {
			return err
		}
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	if from < schemaVersion {
		s.log.Info("sqlstore: schema migrated", "from", from, "to", schemaVersion)
	}
	return nil
}

func (s *Store) migrateMySQL(ctx context.Context, disabled bool) (int, error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := mysqlLock(ctx, conn); err != nil {
		return 0, fmt.Errorf("take the migration lock: %w", err)
	}
	defer mysqlUnlock(conn)
	run := func(fn func(t txn) error) error {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(txn{tx: tx, eng: s.eng, logSQL: s.logSQL}); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	var from int
	if err := run(func(t txn) (err error) {
		from, err = s.schemaVersionOf(ctx, t, disabled)
		return err
	}); err != nil {
		return 0, err
	}
	for v := from; v < schemaVersion; v++ {
		if err := run(func(t txn) error { return s.migrateStep(ctx, t, v) }); err != nil {
			return 0, err
		}
	}
	return from, nil
}

// schemaVersionOf reads the database's schema version, creating the
// version table in a new database, and checks that this code may use it.
func (s *Store) schemaVersionOf(ctx context.Context, t txn, disabled bool) (int, error) {
	if _, err := t.exec(ctx, dialect(t.eng, s.collation, `CREATE TABLE IF NOT EXISTS schema_version (
			id INTEGER PRIMARY KEY,
			version INTEGER NOT NULL
		)`)); err != nil {
		return 0, err
	}
	var from int
	err := t.queryRow(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&from)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		from = 0
		if _, err := t.exec(ctx, `INSERT INTO schema_version (id, version) VALUES (1, 0)`); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, err
	}
	if from > schemaVersion {
		return 0, fmt.Errorf("%w (database at version %d, code knows up to %d)", ErrSchemaTooNew, from, schemaVersion)
	}
	// A new database is initialized even so, as SPIRE does: there is
	// nothing in it that an upgrade could harm.
	if disabled && from > 0 && from < schemaVersion {
		return 0, keyErr("disable_migration", "auto-migration must be enabled for current DB: its schema is at version %d and this server needs %d (migrate it, or unset disable_migration)", from, schemaVersion)
	}
	return from, nil
}

// migrateStep upgrades version v to v+1.
func (s *Store) migrateStep(ctx context.Context, t txn, v int) error {
	for _, stmt := range migrations[v] {
		if _, err := t.exec(ctx, dialect(t.eng, s.collation, stmt)); err != nil {
			return fmt.Errorf("migration to version %d: %w", v+1, err)
		}
	}
	_, err := t.exec(ctx, `UPDATE schema_version SET version = ? WHERE id = 1`, v+1)
	return err
}
