package sqlstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// withUmask runs the rest of the test under mask and restores the old one.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func perm(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// writeToken commits a join token: the secret the files must not leak.
func writeToken(t *testing.T, s *Store) {
	t.Helper()
	if err := s.CreateJoinToken(ctx, &datastore.JoinToken{Token: fmt.Sprintf("secret-%d", time.Now().UnixNano()), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func TestSQLiteFilesArePrivateWhateverTheUmask(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o277} {
		t.Run(fmt.Sprintf("umask %04o", mask), func(t *testing.T) {
			// The test's own directory is made before the umask bites.
			dir := filepath.Join(t.TempDir(), "data")
			withUmask(t, mask)
			db := filepath.Join(dir, "datastore.sqlite3")
			s := openStore(t, Config{DatabaseType: SQLite, ConnectionString: db})
			writeToken(t, s)
			if got := perm(t, dir); got != fs.ModeDir|0o700 {
				t.Errorf("created directory mode %v, want drwx------", got)
			}
			// The store is open and has written, so the WAL and the
			// shared-memory index exist.
			for _, p := range []string{db, db + "-wal", db + "-shm"} {
				if got := perm(t, p); got != 0o600 {
					t.Errorf("%s: mode %v, want -rw-------", filepath.Base(p), got)
				}
			}
		})
	}
}

func TestSQLiteExistingFilesKeepModeAndWarn(t *testing.T) {
	// A data_dir the operator made 0755, with a database an older release
	// created 0644.
	dir := t.TempDir()
	withUmask(t, 0o022)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "datastore.sqlite3")
	s := openStore(t, Config{DatabaseType: SQLite, ConnectionString: db})
	writeToken(t, s)
	s.Close()
	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s = openStore(t, Config{DatabaseType: SQLite, ConnectionString: db, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	writeToken(t, s)
	if got := perm(t, dir); got != fs.ModeDir|0o755 {
		t.Errorf("existing directory changed to %v", got)
	}
	if got := perm(t, db); got != 0o644 {
		t.Errorf("existing database changed to %v", got)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, db) || !strings.Contains(out, "chmod 600") {
		t.Errorf("no warning naming %s and the fix; logs:\n%s", db, out)
	}
	if strings.Contains(out, "secret-") {
		t.Error("a join token reached the logs")
	}

	// A private database opens without a warning.
	s.Close()
	if err := os.Chmod(db, 0o600); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	openStore(t, Config{DatabaseType: SQLite, ConnectionString: db, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warning for a 0600 database:\n%s", logs.String())
	}
}

func TestSQLiteSynchronousFull(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", 2}, // FULL: the default
		{"?_synchronous=NORMAL", 1},
		{"?_sync=OFF", 0},
	} {
		t.Run(tc.query, func(t *testing.T) {
			s := openStore(t, Config{DatabaseType: SQLite, ConnectionString: filepath.Join(t.TempDir(), "ds.sqlite3") + tc.query})
			var got int
			if err := s.w.QueryRow("PRAGMA synchronous").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("writer synchronous = %d, want %d", got, tc.want)
			}
			if err := s.r.QueryRow("PRAGMA synchronous").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("reader synchronous = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestSQLiteModeRWDoesNotCreate: with mode=rw (or ro) SQLite must not create
// the database, so a mistyped path is SQLite's "unable to open" error, not a
// fresh, empty, migrated datastore that silently replaces the real one.
// Without a mode, or with rwc, the file is created 0600 as before.
func TestSQLiteModeRWDoesNotCreate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		conn   func(p string) string
		create bool
	}{
		{"plain path mode=rw", func(p string) string { return p + "?mode=rw" }, false},
		{"plain path mode=ro", func(p string) string { return p + "?mode=ro" }, false},
		{"file URI mode=rw", func(p string) string { return "file:" + p + "?mode=rw" }, false},
		{"plain path", func(p string) string { return p }, true},
		{"plain path mode=rwc", func(p string) string { return p + "?mode=rwc" }, true},
		{"file URI", func(p string) string { return "file:" + p }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			db := filepath.Join(dir, "datastore.sqlite3")
			s, err := Open(ctx, Config{DatabaseType: SQLite, ConnectionString: tc.conn(db)})
			if s != nil {
				defer s.Close()
			}
			if !tc.create {
				if err == nil {
					t.Fatal("Open of a missing database with a no-create mode succeeded")
				}
				if !strings.Contains(err.Error(), "unable to open") {
					t.Errorf("error %q, want SQLite's unable-to-open error", err)
				}
				if _, err := os.Lstat(db); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("database file after the refused open: %v, want none", err)
				}
				if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("database directory after the refused open: %v, want none", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			writeToken(t, s)
			if got := perm(t, db); got != 0o600 {
				t.Errorf("created database mode %v, want -rw-------", got)
			}
		})
	}
	// An existing database opens with mode=rw.
	db := filepath.Join(t.TempDir(), "datastore.sqlite3")
	s := openStore(t, Config{DatabaseType: SQLite, ConnectionString: db})
	writeToken(t, s)
	s.Close()
	s = openStore(t, Config{DatabaseType: SQLite, ConnectionString: db + "?mode=rw"})
	writeToken(t, s)

	// A plain path is passed to SQLite as a file: URI; characters a URI
	// path would read as escapes or its end still name the literal file.
	odd := filepath.Join(t.TempDir(), "a%41b#c", "ds.sqlite3")
	s = openStore(t, Config{DatabaseType: SQLite, ConnectionString: odd})
	writeToken(t, s)
	if got := perm(t, odd); got != 0o600 {
		t.Errorf("%s: mode %v, want -rw-------", odd, got)
	}
	if _, err := os.Lstat(odd + "-wal"); err != nil {
		t.Errorf("SQLite did not open the literal path %s: %v", odd, err)
	}
}
