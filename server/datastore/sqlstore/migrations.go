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

// dialect maps the placeholders used in migrations to each engine's types.
// PostgreSQL keys are collated "C" so that paging by key orders the same
// way as on SQLite (byte order), whatever the database locale.
func dialect(pg bool, stmt string) string {
	r := strings.NewReplacer(
		"{key}", map[bool]string{false: "TEXT", true: `TEXT COLLATE "C"`}[pg],
		"{blob}", map[bool]string{false: "BLOB", true: "BYTEA"}[pg],
	)
	return r.Replace(stmt)
}

// migrations is the ordered schema history; index i upgrades version i to
// i+1. Never edit a released step: append a new one.
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
			hint TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL,
			revision_number BIGINT NOT NULL DEFAULT 0,
			unique_key TEXT NOT NULL UNIQUE
		)`,
		`CREATE INDEX registered_entries_spiffe_id ON registered_entries (spiffe_id)`,
		`CREATE INDEX registered_entries_parent_id ON registered_entries (parent_id)`,
		`CREATE INDEX registered_entries_hint ON registered_entries (hint)`,
		`CREATE TABLE selectors (
			entry_id {key} NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
			type TEXT NOT NULL,
			value TEXT NOT NULL,
			PRIMARY KEY (entry_id, type, value)
		)`,
		`CREATE INDEX selectors_type_value ON selectors (type, value, entry_id)`,
		`CREATE TABLE dns_names (
			entry_id {key} NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
			ord INTEGER NOT NULL,
			value TEXT NOT NULL,
			PRIMARY KEY (entry_id, ord)
		)`,
		`CREATE TABLE federates_with (
			entry_id {key} NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
			ord INTEGER NOT NULL,
			trust_domain TEXT NOT NULL,
			PRIMARY KEY (entry_id, trust_domain)
		)`,
		`CREATE INDEX federates_with_trust_domain ON federates_with (trust_domain, entry_id)`,
		`CREATE TABLE entries_revision (
			id INTEGER PRIMARY KEY,
			revision BIGINT NOT NULL
		)`,
		`INSERT INTO entries_revision (id, revision) VALUES (1, 0)`,
		`CREATE TABLE attested_nodes (
			spiffe_id {key} PRIMARY KEY,
			data_type TEXT NOT NULL,
			serial_number TEXT NOT NULL DEFAULT '',
			expires_at BIGINT NOT NULL DEFAULT 0,
			new_serial_number TEXT NOT NULL DEFAULT '',
			new_expires_at BIGINT NOT NULL DEFAULT 0,
			can_reattest BOOLEAN NOT NULL DEFAULT FALSE
		)`,
		`CREATE INDEX attested_nodes_data_type ON attested_nodes (data_type)`,
		`CREATE INDEX attested_nodes_expires_at ON attested_nodes (expires_at)`,
		`CREATE TABLE node_selectors (
			spiffe_id {key} NOT NULL,
			type TEXT NOT NULL,
			value TEXT NOT NULL,
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
			endpoint_spiffe_id TEXT NOT NULL DEFAULT ''
		)`,
	},
}

// schemaVersion is the schema version this code writes.
var schemaVersion = len(migrations)

// migrate applies missing migrations in one transaction. On PostgreSQL an
// advisory lock keeps two servers starting at once from both migrating; on
// SQLite the writer's BEGIN IMMEDIATE does the same.
func (s *Store) migrate(ctx context.Context) error {
	var from int
	err := s.write(ctx, func(t txn) error {
		if t.pg {
			if _, err := t.exec(ctx, `SELECT pg_advisory_xact_lock(7283941)`); err != nil {
				return err
			}
		}
		if _, err := t.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			id INTEGER PRIMARY KEY,
			version INTEGER NOT NULL
		)`); err != nil {
			return err
		}
		err := t.queryRow(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&from)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			from = 0
			if _, err := t.exec(ctx, `INSERT INTO schema_version (id, version) VALUES (1, 0)`); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if from > schemaVersion {
			return fmt.Errorf("%w (database at version %d, code knows up to %d)", ErrSchemaTooNew, from, schemaVersion)
		}
		for v := from; v < schemaVersion; v++ {
			for _, stmt := range migrations[v] {
				if _, err := t.exec(ctx, dialect(t.pg, stmt)); err != nil {
					return fmt.Errorf("migration to version %d: %w", v+1, err)
				}
			}
		}
		if from < schemaVersion {
			_, err = t.exec(ctx, `UPDATE schema_version SET version = ? WHERE id = 1`, schemaVersion)
			return err
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrSchemaTooNew) {
			return err
		}
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	if from < schemaVersion {
		s.log.Info("sqlstore: schema migrated", "from", from, "to", schemaVersion)
	}
	return nil
}
