package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/mattn/go-sqlite3"

	"github.com/spiffe-hw/spire-hw/internal/daemondir"
	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// Database types accepted in Config.DatabaseType (SPIRE's names).
const (
	SQLite   = "sqlite3"
	Postgres = "postgres"
	MySQL    = "mysql"
)

// Config selects and locates the database.
type Config struct {
	// DatabaseType is "sqlite3" or "postgres".
	DatabaseType string
	// ConnectionString is a file path (or file: URI) for SQLite, a libpq /
	// pgx connection string or URL for PostgreSQL.
	ConnectionString string
	// Log receives migration and maintenance messages; nil discards them.
	Log *slog.Logger
}

// Store implements datastore.DataStore over database/sql.
type Store struct {
	pg  bool
	w   *sql.DB // writes; one connection on SQLite
	r   *sql.DB // reads; the same pool as w on PostgreSQL
	log *slog.Logger
	// wStmts and rStmts hold the prepared statements of w and r (the
	// same cache when r is w).
	wStmts, rStmts *stmtCache
}

var _ datastore.DataStore = (*Store)(nil)

// Open connects to the database and brings its schema up to date.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{log: log}
	var err error
	switch cfg.DatabaseType {
	case SQLite:
		err = s.openSQLite(cfg.ConnectionString)
	case Postgres:
		err = s.openPostgres(cfg.ConnectionString)
	case MySQL:
		return nil, fmt.Errorf("sqlstore: database_type %q is not supported yet (supported: %q, %q)", cfg.DatabaseType, SQLite, Postgres)
	default:
		return nil, fmt.Errorf("sqlstore: unknown database_type %q (supported: %q, %q)", cfg.DatabaseType, SQLite, Postgres)
	}
	if err != nil {
		return nil, err
	}
	if err := s.w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlstore: connect to %s: %w", cfg.DatabaseType, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.wStmts = newStmtCache(s.w)
	s.rStmts = s.wStmts
	if s.r != s.w {
		s.rStmts = newStmtCache(s.r)
	}
	return s, nil
}

func (s *Store) openPostgres(conn string) error {
	if conn == "" {
		return errors.New("sqlstore: postgres: connection_string is empty")
	}
	db, err := sql.Open("pgx", conn)
	if err != nil {
		return fmt.Errorf("sqlstore: postgres: %w", err)
	}
	s.pg = true
	s.w, s.r = db, db
	return nil
}

func (s *Store) openSQLite(conn string) error {
	path, query, memory, err := parseSQLitePath(conn)
	if err != nil {
		return err
	}
	// Only a mode that lets SQLite create the file (none, or rwc) has it
	// created here first; with mode=rw or ro a missing file must stay
	// SQLite's "unable to open" error, since a mistyped path would
	// otherwise start the server on an empty, freshly migrated datastore.
	mayCreate := query.Get("mode") == "" || query.Get("mode") == "rwc"
	if !memory && mayCreate {
		if _, err := daemondir.Ensure(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("sqlstore: sqlite: database directory: %w", err)
		}
		if err := s.createPrivate(path); err != nil {
			return err
		}
	}
	base := conn
	if i := strings.IndexByte(conn, '?'); i >= 0 {
		base = conn[:i]
	}
	if !strings.HasPrefix(base, "file:") && base != "" && base != ":memory:" {
		// The driver hands SQLite a plain path without its query, so
		// SQLite's own parameters (mode, cache, ...) would be dropped; as a
		// file: URI (as SPIRE rewrites it) they reach SQLite.
		base = "file:" + uriPathEscaper.Replace(base)
	}
	dsn := func(writer bool) string {
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		setDefault := func(k, v string) {
			if q.Get(k) == "" {
				q.Set(k, v)
			}
		}
		setDefault("_journal_mode", "WAL")
		setDefault("_busy_timeout", "5000")
		setDefault("_foreign_keys", "1")
		// FULL syncs the WAL at every commit, so a write acknowledged to a
		// caller (a join token handed out, an entry created) survives a
		// power loss; the driver's default in WAL mode is NORMAL, which
		// may lose the last commits. An explicit _synchronous (or its
		// alias _sync) in connection_string still wins.
		if q.Get("_sync") == "" {
			setDefault("_synchronous", "FULL")
		}
		if writer {
			// BEGIN IMMEDIATE takes the write lock up front, so a
			// read-modify-write transaction never fails to upgrade its lock
			// when another process writes.
			setDefault("_txlock", "immediate")
		}
		return base + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite3", dsn(true))
	if err != nil {
		return fmt.Errorf("sqlstore: sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s.w, s.r = w, w
	if memory {
		// A private in-memory database lives in its single connection.
		return nil
	}
	// The writer creates the file and switches it to WAL before readers
	// open it.
	if err := w.Ping(); err != nil {
		w.Close()
		return fmt.Errorf("sqlstore: sqlite: open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite3", dsn(false))
	if err != nil {
		w.Close()
		return fmt.Errorf("sqlstore: sqlite: %w", err)
	}
	n := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s.r = r
	return nil
}

// createPrivate creates the database file 0600 before SQLite opens it, so
// that it is never readable by other users whatever the umask (SQLite's own
// default is 0644). SQLite creates the -wal, -shm and -journal files with
// the database file's mode, so they are 0600 too. An existing file keeps
// the mode it has (the operator's choice, or an older release's); a warning
// says when that lets other users in.
func (s *Store) createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		// The umask can only have narrowed 0600; widen it back, since a
		// 0400 file would open read-only.
		err = f.Chmod(0o600)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sqlstore: sqlite: create %s: %w", path, err)
		}
		return nil
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("sqlstore: sqlite: create %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		daemondir.WarnShared(s.log, p, false, "SQLite file is accessible to other users, and it holds join tokens and node records")
	}
	return nil
}

// uriPathEscaper escapes the characters a file: URI's path cannot hold
// literally: SQLite decodes %HH, and ? and # end the path.
var uriPathEscaper = strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23")

// parseSQLitePath extracts the file path from a SPIRE-style connection
// string: a plain path or a file: URI, either with optional query
// parameters.
func parseSQLitePath(conn string) (path string, query url.Values, memory bool, err error) {
	if conn == "" {
		return "", nil, false, errors.New("sqlstore: sqlite: connection_string is empty")
	}
	base, rawQuery, _ := strings.Cut(conn, "?")
	query, err = url.ParseQuery(rawQuery)
	if err != nil {
		return "", nil, false, fmt.Errorf("sqlstore: sqlite: connection_string query: %w", err)
	}
	path = base
	if p, ok := strings.CutPrefix(base, "file:"); ok {
		if rest, ok := strings.CutPrefix(p, "//"); ok {
			// file://host/path: only an empty or "localhost" host is valid.
			host, after, _ := strings.Cut(rest, "/")
			if host != "" && host != "localhost" {
				return "", nil, false, fmt.Errorf("sqlstore: sqlite: file URI with host %q", host)
			}
			p = "/" + after
		}
		if path, err = url.PathUnescape(p); err != nil {
			return "", nil, false, fmt.Errorf("sqlstore: sqlite: file URI path: %w", err)
		}
	}
	memory = path == ":memory:" || path == "" || query.Get("mode") == "memory"
	return path, query, memory, nil
}

// Close releases the connection pools.
func (s *Store) Close() error {
	err := s.wStmts.close()
	if s.rStmts != s.wStmts {
		err = errors.Join(err, s.rStmts.close())
	}
	if s.r != nil && s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	if s.w != nil {
		err = errors.Join(err, s.w.Close())
	}
	return err
}

// txn runs statements written with ? placeholders on either engine.
type txn struct {
	tx    *sql.Tx
	pg    bool
	stmts *stmtCache
	// missed collects the queries that ran unprepared, for the caller to
	// prepare once the transaction has ended.
	missed *[]string
}

// stmt returns the transaction's copy of the cached statement for query,
// or nil to run it unprepared (and have it prepared afterwards).
func (t txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.stmts.lookup(query); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	if t.missed != nil {
		*t.missed = append(*t.missed, query)
	}
	return nil
}

func (t txn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = rebind(t.pg, query)
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t txn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = rebind(t.pg, query)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t txn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query = rebind(t.pg, query)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

// forUpdate locks the rows a read-modify-write reads. SQLite needs no
// clause: its writer transactions are exclusive.
func (t txn) forUpdate() string {
	if t.pg {
		return " FOR UPDATE"
	}
	return ""
}

// rebind turns ? placeholders into PostgreSQL's $n. Queries in this package
// never contain a literal question mark.
func rebind(pg bool, query string) string {
	if !pg || !strings.Contains(query, "?") {
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

// write runs fn in a read-write transaction and commits when it returns nil.
func (s *Store) write(ctx context.Context, fn func(t txn) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	var missed []string
	if err := fn(txn{tx: tx, pg: s.pg, stmts: s.wStmts, missed: &missed}); err != nil {
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
	opts := &sql.TxOptions{ReadOnly: true}
	if s.pg {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.r.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	var missed []string
	// Deferred in this order: the transaction's connection goes back to
	// the pool (even on a panic in fn) before statements are prepared.
	defer func() { s.rStmts.prepare(ctx, missed) }()
	defer func() { _ = tx.Rollback() }()
	return fn(txn{tx: tx, pg: s.pg, stmts: s.rStmts, missed: &missed})
}

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY
// violation on either engine.
func isUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
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
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(b) == 0 || encodePageToken(string(b)) != token {
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
