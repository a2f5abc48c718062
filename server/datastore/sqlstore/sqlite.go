package sqlstore

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mattn/go-sqlite3"

	"github.com/spiffe-hw/spire-hw/internal/daemondir"
)

// openSQLite opens the writer (one connection: SQLite admits one writer)
// and, for a file, a reader pool on the same file.
func (s *Store) openSQLite(cfg Config) error {
	for key, v := range map[string]string{"root_ca_path": cfg.RootCAPath, "client_cert_path": cfg.ClientCertPath, "client_key_path": cfg.ClientKeyPath} {
		if v != "" {
			return keyErr(key, "is for a database reached over the network; SQLite is a local file (remove the key or use postgres or mysql)")
		}
	}
	path, query, memory, err := parseSQLitePath(cfg.ConnectionString)
	if err != nil {
		return err
	}
	if memory && cfg.ConnMaxLifetime > 0 {
		return keyErr("conn_max_lifetime", "would drop the in-memory SQLite database with its connection (remove the key or use a file)")
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
	w, err := sql.Open("sqlite3", sqliteDSN(cfg.ConnectionString, query, true))
	if err != nil {
		return fmt.Errorf("sqlstore: sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	w.SetConnMaxIdleTime(0)
	s.w, s.r = w, w
	if memory {
		// A private in-memory database lives in its single connection.
		if cfg.MaxOpenConns != nil || cfg.MaxIdleConns != nil {
			s.log.Warn("sqlstore: max_open_conns and max_idle_conns have no effect on an in-memory SQLite database, which lives in one connection")
		}
		return nil
	}
	// The writer creates the file and switches it to WAL before readers
	// open it.
	if err := w.Ping(); err != nil {
		w.Close()
		return fmt.Errorf("sqlstore: sqlite: open %s: %w", path, err)
	}
	if s.r, err = openSQLiteReaders(cfg, cfg.ConnectionString, query); err != nil {
		w.Close()
		return err
	}
	return nil
}

// openSQLiteReaders opens a pool of read connections to conn.
func openSQLiteReaders(cfg Config, conn string, query url.Values) (*sql.DB, error) {
	r, err := sql.Open("sqlite3", sqliteDSN(conn, query, false))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: sqlite: %w", err)
	}
	n := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(intOr(cfg.MaxOpenConns, n))
	r.SetMaxIdleConns(intOr(cfg.MaxIdleConns, n))
	r.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	return r, nil
}

// openSQLiteReplica opens ro_connection_string, which must exist: it is
// a copy kept by something else, never created or migrated here.
func openSQLiteReplica(cfg Config) (*sql.DB, error) {
	_, query, memory, err := parseSQLitePath(cfg.ROConnectionString)
	if err != nil {
		return nil, keyErr("ro_connection_string", "%v", err)
	}
	if memory {
		return nil, keyErr("ro_connection_string", "names an in-memory database, which would be a new, empty one (point it at the replica's file)")
	}
	if query.Get("mode") == "" {
		query.Set("mode", "ro")
	}
	return openSQLiteReaders(cfg, cfg.ROConnectionString, query)
}

// sqliteDSN is the driver DSN for conn with its query replaced by query
// plus this store's defaults.
func sqliteDSN(conn string, query url.Values, writer bool) string {
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
	// caller (a join token handed out, an entry created) survives a power
	// loss; the driver's default in WAL mode is NORMAL, which may lose the
	// last commits. An explicit _synchronous (or its alias _sync) in
	// connection_string still wins.
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

// isSQLiteUnique reports a UNIQUE or PRIMARY KEY violation.
func isSQLiteUnique(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey)
}
