package sqlstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

func TestMain(m *testing.M) {
	stop := mariadb.Share()
	code := postgres.Main(m)
	stop()
	os.Exit(code)
}

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sqliteConfig points at a file in a directory that does not exist yet:
// Open must create it.
func sqliteConfig(t *testing.T) Config {
	return Config{DatabaseType: SQLite, ConnectionString: filepath.Join(t.TempDir(), "data", "server", "datastore.sqlite3")}
}

func postgresConfig(t *testing.T) Config {
	return Config{DatabaseType: Postgres, ConnectionString: postgres.Start(t)}
}

func mysqlConfig(t *testing.T) Config {
	return Config{DatabaseType: MySQL, ConnectionString: mariadb.Start(t)}
}

func TestSQLite(t *testing.T) {
	testDataStore(t, func(t *testing.T) datastore.DataStore { return openStore(t, sqliteConfig(t)) })
}

func TestPostgres(t *testing.T) {
	postgresConfig(t) // skip early when no server
	testDataStore(t, func(t *testing.T) datastore.DataStore { return openStore(t, postgresConfig(t)) })
}

func TestMySQL(t *testing.T) {
	mysqlConfig(t) // skip early when no server
	testDataStore(t, func(t *testing.T) datastore.DataStore { return openStore(t, mysqlConfig(t)) })
}

// engines are the databases the store runs on, for tests that run on each.
var engines = []struct {
	name string
	cfg  func(t *testing.T) Config
}{{"sqlite", sqliteConfig}, {"postgres", postgresConfig}, {"mysql", mysqlConfig}}

func TestMigrations(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			cfg := engine.cfg(t)
			s, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetCAJournal(ctx, &datastore.CAJournal{Name: "j", Data: []byte("kept")}); err != nil {
				t.Fatal(err)
			}
			s.Close()

			// Reopening migrates nothing and keeps the data.
			s, err = Open(ctx, cfg)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if got, err := s.FetchCAJournal(ctx, "j"); err != nil || string(got.Data) != "kept" {
				t.Fatalf("after reopen: %v, %v", got, err)
			}
			var version int
			if err := s.r.QueryRow(`SELECT version FROM schema_version WHERE id = 1`).Scan(&version); err != nil || version != schemaVersion {
				t.Fatalf("schema version %d, %v; want %d", version, err, schemaVersion)
			}
			// A database from the future is refused.
			if _, err := s.w.Exec(rebind(s.eng, `UPDATE schema_version SET version = ? WHERE id = 1`), schemaVersion+1); err != nil {
				t.Fatal(err)
			}
			s.Close()
			_, err = Open(ctx, cfg)
			if !errors.Is(err, ErrSchemaTooNew) {
				t.Fatalf("Open of a newer schema: %v, want ErrSchemaTooNew", err)
			}
		})
	}
}

// TestMigrationAtomic checks that a failing migration leaves the database
// at its previous version with none of the step's changes.
func TestMigrationAtomic(t *testing.T) {
	cfg := sqliteConfig(t)
	s := openStore(t, cfg)
	s.Close()
	saved := migrations
	t.Cleanup(func() { migrations, schemaVersion = saved, len(saved) })
	migrations = append(append([]migration{}, saved...), migration{
		`CREATE TABLE half_done (x INTEGER)`,
		`THIS IS NOT SQL`,
	})
	schemaVersion = len(migrations)
	if _, err := Open(ctx, cfg); err == nil {
		t.Fatal("broken migration applied")
	}
	migrations, schemaVersion = saved, len(saved)
	s = openStore(t, cfg)
	var n int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("failed migration left a table behind (%d, %v)", n, err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown type", Config{DatabaseType: "oracle", ConnectionString: "x"}, `unknown database_type "oracle" (supported: "sqlite3", "postgres", "mysql")`},
		{"empty mysql", Config{DatabaseType: MySQL}, "connection_string is empty"},
		{"empty sqlite", Config{DatabaseType: SQLite}, "connection_string is empty"},
		{"empty postgres", Config{DatabaseType: Postgres}, "connection_string is empty"},
		{"sqlite file URI with host", Config{DatabaseType: SQLite, ConnectionString: "file://remote/x.db"}, "host"},
	} {
		_, err := Open(ctx, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestSQLiteConnectionStrings(t *testing.T) {
	dir := t.TempDir()
	for _, conn := range []string{
		"file:" + filepath.Join(dir, "uri", "ds.sqlite3") + "?cache=private",
		"file://" + filepath.Join(dir, "abs", "ds.sqlite3"),
		filepath.Join(dir, "plain", "ds.sqlite3") + "?_busy_timeout=1000",
		":memory:",
	} {
		s, err := Open(ctx, Config{DatabaseType: SQLite, ConnectionString: conn})
		if err != nil {
			t.Errorf("%s: %v", conn, err)
			continue
		}
		if err := s.SetCAJournal(ctx, &datastore.CAJournal{Name: "x", Data: []byte("y")}); err != nil {
			t.Errorf("%s: write: %v", conn, err)
		}
		if got, err := s.FetchCAJournal(ctx, "x"); err != nil || string(got.Data) != "y" {
			t.Errorf("%s: read back %v, %v", conn, got, err)
		}
		var mode string
		if err := s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Errorf("%s: %v", conn, err)
		} else if conn != ":memory:" && mode != "wal" {
			t.Errorf("%s: journal_mode %q, want wal", conn, mode)
		}
		s.Close()
	}
	for _, sub := range []string{"uri", "abs", "plain"} {
		if _, err := os.Stat(filepath.Join(dir, sub, "ds.sqlite3")); err != nil {
			t.Errorf("database file in %s: %v", sub, err)
		}
	}
}

// TestSQLiteConcurrentWriters runs many writers in one store and a second
// store on the same file: none may see SQLITE_BUSY.
func TestSQLiteConcurrentWriters(t *testing.T) {
	cfg := sqliteConfig(t)
	a, b := openStore(t, cfg), openStore(t, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%4 == 0 {
				s = b
			}
			_, err := s.CreateEntry(ctx, &types.Entry{SpiffeId: sid("td", fmt.Sprintf("/w%d", i)), ParentId: sid("td", "/p"), Selectors: sel("a", "1")})
			if err != nil {
				errs <- err
			}
			if _, _, err := s.ListEntries(ctx, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := a.CountEntries(ctx, nil); err != nil || n != 32 {
		t.Fatalf("CountEntries = %d, %v", n, err)
	}
}

func TestForeignKeysOn(t *testing.T) {
	s := openStore(t, sqliteConfig(t))
	_, err := s.w.Exec(`INSERT INTO selectors (entry_id, type, value) VALUES ('nope', 'a', 'b')`)
	if err == nil {
		t.Fatal("selector for a missing entry accepted: foreign keys are off")
	}
	var fk int
	if err := s.r.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("reader foreign_keys = %d, %v", fk, err)
	}
}
