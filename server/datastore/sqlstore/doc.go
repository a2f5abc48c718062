// Package sqlstore is the SQL implementation of datastore.DataStore, backed
// by SQLite (embedded, the default) or PostgreSQL.
//
// The schema is versioned: Open applies the migrations the database lacks in
// one transaction and refuses a database written by newer code, so an
// accidental downgrade cannot corrupt data it does not understand.
//
// Every change that touches more than one row runs in one transaction, and
// uniqueness (duplicate entries, join tokens, bundles) is enforced by UNIQUE
// constraints rather than by read-then-write checks, so concurrent callers
// cannot race past it. SQLite admits a single writer: the store funnels all
// writes through one connection (readers use their own pool, which WAL mode
// lets run beside the writer), so in-process writers queue instead of
// failing with SQLITE_BUSY.
package sqlstore
