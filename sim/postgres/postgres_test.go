package postgres

import (
	"database/sql"
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestDatabasesAreIsolated checks that Start gives each caller a working,
// empty database of its own on one shared server.
func TestDatabasesAreIsolated(t *testing.T) {
	a, b := open(t, Start(t)), open(t, Start(t))
	if _, err := a.Exec(`CREATE TABLE only_in_a (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(`SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'only_in_a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a table created in one database is visible in another")
	}
	var nameA, nameB string
	if err := a.QueryRow(`SELECT current_database()`).Scan(&nameA); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(`SELECT current_database()`).Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("both callers got database %q", nameA)
	}
	mu.Lock()
	defer mu.Unlock()
	if os.Getenv("PG_TEST_DSN") == "" && shared == nil {
		t.Fatal("Main did not make the server shared")
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"host=/tmp port=5432 user=postgres dbname=postgres", "host=/tmp port=5432 user=postgres dbname=postgres dbname=t1"},
		{"postgres://u:p@localhost:5432/postgres?sslmode=disable", "postgres://u:p@localhost:5432/t1?sslmode=disable"},
	} {
		if got := withDatabase(tc.in, "t1"); got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
