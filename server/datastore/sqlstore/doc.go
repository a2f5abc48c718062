// Package sqlstore is the SQL implementation of datastore.DataStore, backed
// by SQLite (embedded, the default), PostgreSQL or MySQL (and MariaDB), with
// the keys of SPIRE's "sql" DataStore (see Config).
//
// The schema is versioned: Open applies the migrations the database lacks
// and refuses a database written by newer code, so an accidental downgrade
// cannot corrupt data it does not understand.
//
// Every change that touches more than one row runs in one transaction, and
// uniqueness (duplicate entries, join tokens, bundles) is enforced by UNIQUE
// constraints rather than by read-then-write checks, so concurrent callers
// cannot race past it. Every entry and node write also appends an event
// (registered_entries_events, attested_node_entries_events) in its own
// transaction, for the caches of servers sharing the database
// (server/events).
//
// SQLite admits a single writer: the store funnels all
// writes through one connection (readers use their own pool, which WAL mode
// lets run beside the writer), so in-process writers queue instead of
// failing with SQLITE_BUSY.
//
// The engines differ in a few places, each kept beside the statement it
// changes: placeholders ($n on PostgreSQL), upserts (ON DUPLICATE KEY on
// MySQL), DELETE ... RETURNING (a locked read then a delete on MySQL),
// IN-subqueries with LIMIT (a derived table on MySQL), DDL types and table
// options (utf8mb4 with a binary NO PAD collation on MySQL, so that keys
// compare byte for byte everywhere), and MySQL's deadlock victims, whose
// transactions are run again.
package sqlstore
