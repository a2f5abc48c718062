package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// engine is the database a Store talks to; the SQL differs in a few
// places (placeholders, upserts, locking, DDL).
type engine int

const (
	sqliteEngine engine = iota
	postgresEngine
	mysqlEngine
)

// Store implements datastore.DataStore over database/sql.
type Store struct {
	eng engine
	w   *sql.DB // writes; one connection on SQLite
	r   *sql.DB // reads; the same pool as w on PostgreSQL and MySQL
	// ro serves the reads that tolerate lag: the ro_connection_string
	// replica, or r when there is none.
	ro *sql.DB
	// replicaFailing is set while reads meant for ro go to r, so that
	// the change is logged once each way.
	replicaFailing atomic.Bool
	log            *slog.Logger
	// logSQL, when set, receives every statement (log_sql).
	logSQL *slog.Logger
	// collation is the table collation on MySQL.
	collation string
	// wStmts, rStmts and roStmts hold the prepared statements of w, r and
	// ro (one cache per pool). MySQL has none: see openMySQL.
	wStmts, rStmts, roStmts *stmtCache
}

var _ datastore.DataStore = (*Store)(nil)

// Open connects to the database and brings its schema up to date.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{log: log}
	if cfg.LogSQL {
		s.logSQL = log
	}
	var err error
	switch cfg.DatabaseType {
	case SQLite:
		s.eng = sqliteEngine
		err = s.openSQLite(cfg)
	case Postgres:
		s.eng = postgresEngine
		s.w, err = openPostgres(cfg, "connection_string", cfg.ConnectionString)
		s.r = s.w
	case MySQL:
		s.eng = mysqlEngine
		s.w, err = openMySQL(cfg, "connection_string", cfg.ConnectionString, log)
		s.r = s.w
	default:
		return nil, fmt.Errorf("sqlstore: unknown database_type %q (supported: %q, %q, %q)", cfg.DatabaseType, SQLite, Postgres, MySQL)
	}
	if err != nil {
		return nil, err
	}
	s.ro = s.r
	// Both connection strings are checked before either is connected to.
	if cfg.ROConnectionString != "" {
		if s.ro, err = s.openReplica(cfg); err != nil {
			s.ro = s.r
			s.Close()
			return nil, err
		}
	}
	if err := s.w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlstore: connect to %s: %w", cfg.DatabaseType, err)
	}
	if s.ro != s.r {
		if err := s.ro.PingContext(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlstore: connect to the read-only replica (ro_connection_string): %w", err)
		}
		s.log.Info("sqlstore: the read-only replica (ro_connection_string) serves the reads that tolerate lag: the change events that every server polls")
	}
	if s.eng == mysqlEngine {
		if s.collation, err = mysqlCollation(ctx, s.w, log); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.migrate(ctx, cfg.DisableMigration); err != nil {
		s.Close()
		return nil, err
	}
	if s.eng != mysqlEngine {
		s.wStmts = newStmtCache(s.w)
		s.rStmts = s.wStmts
		if s.r != s.w {
			s.rStmts = newStmtCache(s.r)
		}
		s.roStmts = s.rStmts
		if s.ro != s.r {
			s.roStmts = newStmtCache(s.ro)
		}
	}
	return s, nil
}

// openReplica opens a pool for ro_connection_string with the engine and
// the pool and TLS keys of the primary, as SPIRE does.
func (s *Store) openReplica(cfg Config) (*sql.DB, error) {
	const key = "ro_connection_string"
	switch s.eng {
	case sqliteEngine:
		return openSQLiteReplica(cfg)
	case postgresEngine:
		return openPostgres(cfg, key, cfg.ROConnectionString)
	default:
		return openMySQL(cfg, key, cfg.ROConnectionString, s.log)
	}
}

// Close releases the connection pools.
func (s *Store) Close() error {
	var err error
	for _, c := range uniq(s.wStmts, s.rStmts, s.roStmts) {
		err = errors.Join(err, c.close())
	}
	for _, db := range uniq(s.ro, s.r, s.w) {
		err = errors.Join(err, db.Close())
	}
	return err
}

// uniq returns the distinct non-nil values of vs, in order.
func uniq[T any](vs ...*T) []*T {
	var out []*T
	for _, v := range vs {
		if v != nil && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// txn runs statements written with ? placeholders on any engine.
type txn struct {
	tx    *sql.Tx
	eng   engine
	stmts *stmtCache
	// missed collects the queries that ran unprepared, for the caller to
	// prepare once the transaction has ended.
	missed *[]string
	logSQL *slog.Logger
}

// stmt returns the transaction's copy of the cached statement for query,
// or nil to run it unprepared (and have it prepared afterwards).
func (t txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if t.logSQL != nil {
		// The arguments stay out: they include join tokens.
		t.logSQL.Debug("sqlstore: SQL", "query", query)
	}
	if st := t.stmts.lookup(query); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	if t.missed != nil && t.stmts != nil {
		*t.missed = append(*t.missed, query)
	}
	return nil
}

func (t txn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = rebind(t.eng, query)
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t txn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = rebind(t.eng, query)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t txn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query = rebind(t.eng, query)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

// forUpdate locks the rows a read-modify-write reads. SQLite needs no
// clause: its writer transactions are exclusive.
func (t txn) forUpdate() string {
	if t.eng == sqliteEngine {
		return ""
	}
	return " FOR UPDATE"
}

// upsert writes key's value into table, replacing the row it may have.
func (t txn) upsert(ctx context.Context, table, keyCol, valCol string, key, val any) error {
	q := `INSERT INTO ` + table + ` (` + keyCol + `, ` + valCol + `) VALUES (?, ?) `
	if t.eng == mysqlEngine {
		q += `ON DUPLICATE KEY UPDATE ` + valCol + ` = VALUES(` + valCol + `)`
	} else {
		q += `ON CONFLICT (` + keyCol + `) DO UPDATE SET ` + valCol + ` = excluded.` + valCol
	}
	_, err := t.exec(ctx, q, key, val)
	return err
}

// insertIfAbsent inserts key's row unless one exists and reports whether
// it did. A failed statement aborts a PostgreSQL transaction, so there the
// conflict is skipped in SQL; MySQL's ON DUPLICATE KEY cannot tell a
// skipped row from an inserted one once rows are counted as found, but a
// duplicate there fails the statement alone.
func (t txn) insertIfAbsent(ctx context.Context, table, keyCol, valCol string, key, val any) (bool, error) {
	q := `INSERT INTO ` + table + ` (` + keyCol + `, ` + valCol + `) VALUES (?, ?)`
	if t.eng == mysqlEngine {
		_, err := t.exec(ctx, q, key, val)
		if isUniqueViolation(err) {
			return false, nil
		}
		return err == nil, err
	}
	res, err := t.exec(ctx, q+` ON CONFLICT (`+keyCol+`) DO NOTHING`, key, val)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// inPage is the right-hand side of "x IN (...)" for sub, a query of keys
// that may end in LIMIT, which MySQL refuses directly in an IN subquery
// but takes from a derived table.
func (t txn) inPage(sub string) string {
	if t.eng == mysqlEngine && strings.Contains(sub, " LIMIT ") {
		return `SELECT * FROM (` + sub + `) k`
	}
	return sub
}

// rebind turns ? placeholders into PostgreSQL's $n. Queries in this package
// never contain a literal question mark.
func rebind(eng engine, query string) string {
	if eng != postgresEngine || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// maxDeadlockRetries bounds how often write reruns a transaction that
// MySQL chose as a deadlock victim.
const maxDeadlockRetries = 8

// write runs fn in a read-write transaction and commits when it returns
// nil. On MySQL, where InnoDB's gap locks make concurrent read-then-insert
// transactions deadlock and the server rolls one back, the victim is run
// again: fn must start from scratch each time.
func (s *Store) write(ctx context.Context, fn func(t txn) error) error {
	for attempt := 0; ; attempt++ {
		err := s.writeOnce(ctx, fn)
		if s.eng != mysqlEngine || mysqlErrNumber(err) != mysqlLockDeadlock || attempt == maxDeadlockRetries {
			return err
		}
		// A short random pause, so that the victims do not meet again.
		select {
		case <-time.After(time.Duration(1+mrand.IntN(4<<attempt)) * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

func (s *Store) writeOnce(ctx context.Context, fn func(t txn) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	var missed []string
	if err := fn(txn{tx: tx, eng: s.eng, stmts: s.wStmts, missed: &missed, logSQL: s.logSQL}); err != nil {
		_ = tx.Rollback()
		return err
	}
	err = tx.Commit()
	s.wStmts.prepare(ctx, missed)
	return err
}

// read runs fn in a read-only transaction so that the several queries a
// listing needs see one snapshot.
func (s *Store) read(ctx context.Context, fn func(t txn) error) error {
	return s.readFrom(ctx, s.r, s.rStmts, fn)
}

// readMaybeStale is read for a caller that tolerates lag: it goes to the
// read-only replica when there is one. A read the replica fails is made
// again on the primary, which is current and so always good enough: a
// replica that is down or refuses the query slows those reads, it does
// not stop them. fn may therefore run twice; each run must start afresh.
func (s *Store) readMaybeStale(ctx context.Context, c datastore.DataConsistency, fn func(t txn) error) error {
	if c != datastore.TolerateStale || s.ro == s.r {
		return s.read(ctx, fn)
	}
	err := s.readFrom(ctx, s.ro, s.roStmts, fn)
	if err == nil {
		if s.replicaFailing.CompareAndSwap(true, false) {
			s.log.Info("sqlstore: reading from the replica (ro_connection_string) again")
		}
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if !s.replicaFailing.Swap(true) {
		s.log.Warn("sqlstore: a read from the replica (ro_connection_string) failed; reading the primary until the replica answers again", "error", err)
	}
	return s.read(ctx, fn)
}

func (s *Store) readFrom(ctx context.Context, db *sql.DB, stmts *stmtCache, fn func(t txn) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if s.eng != sqliteEngine {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	var missed []string
	// Deferred in this order: the transaction's connection goes back to
	// the pool (even on a panic in fn) before statements are prepared.
	defer func() { stmts.prepare(ctx, missed) }()
	defer func() { _ = tx.Rollback() }()
	return fn(txn{tx: tx, eng: s.eng, stmts: stmts, missed: &missed, logSQL: s.logSQL})
}

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY
// violation on any engine.
func isUniqueViolation(err error) bool {
	return err != nil && (isSQLiteUnique(err) || isPostgresUnique(err) || mysqlErrNumber(err) == mysqlDupEntry)
}

// mapErr gives unique violations the datastore sentinel and prefixes op.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUniqueViolation(err) {
		return fmt.Errorf("sqlstore: %s: %w (%v)", op, datastore.ErrAlreadyExists, err)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlstore: %s: %w", op, datastore.ErrNotFound)
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

// Page tokens are the last key of the previous page, encoded so callers
// treat them as opaque.
func encodePageToken(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

func decodePageToken(token string) (string, error) {
	// The decoder skips CR and LF; re-encoding rejects such variants so a
	// token has exactly one spelling.
	// Keys are UTF-8 (they come from protobuf strings); a token that is
	// not would only make MySQL fail the comparison.
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(b) == 0 || !utf8.Valid(b) || encodePageToken(string(b)) != token {
		return "", fmt.Errorf("sqlstore: invalid page token %q", token)
	}
	return string(b), nil
}

// page applies p to a query ordered by keyCol: it adds the "after token"
// condition to w and returns the LIMIT to use (0 for none). The extra row
// fetched beyond Size tells whether another page exists.
func page(p *datastore.Pagination, keyCol string, w *where) (limit int, err error) {
	if p == nil {
		return 0, nil
	}
	if p.Size < 0 {
		return 0, fmt.Errorf("sqlstore: negative page size %d", p.Size)
	}
	if p.Token != "" {
		after, err := decodePageToken(p.Token)
		if err != nil {
			return 0, err
		}
		w.add(keyCol+" > ?", after)
	}
	if p.Size == 0 {
		return 0, nil
	}
	return int(p.Size) + 1, nil
}

// where accumulates AND-ed conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return "1=1"
	}
	return strings.Join(w.conds, " AND ")
}

func limitSQL(limit int) string {
	if limit <= 0 {
		return ""
	}
	return " LIMIT " + strconv.Itoa(limit)
}
