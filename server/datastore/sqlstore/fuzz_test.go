package sqlstore

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// FuzzPageToken feeds arbitrary page tokens (they arrive from API callers)
// to the decoder and the paging code: no panic, and a decoded token always
// round-trips.
func FuzzPageToken(f *testing.F) {
	for _, s := range []string{"", "ZTE", encodePageToken("spiffe://td/n1"), "!!", "====", "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		key, err := decodePageToken(token)
		if err == nil && encodePageToken(key) != token {
			t.Fatalf("token %q decodes to %q which encodes to %q", token, key, encodePageToken(key))
		}
		w := &where{}
		if _, err := page(&datastore.Pagination{Size: 3, Token: token}, "e.id", w); err == nil && token != "" && len(w.args) != 1 {
			t.Fatalf("accepted token %q added %d args", token, len(w.args))
		}
	})
}

// FuzzSQLitePath checks that connection strings never panic the parser
// and that a plain path comes back unchanged.
func FuzzSQLitePath(f *testing.F) {
	for _, s := range []string{"./data/server/datastore.sqlite3", "file:ds.db?cache=shared", "file:///tmp/x.db", ":memory:", "file://h/x", "x?%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, conn string) {
		path, _, _, err := parseSQLitePath(conn)
		if err == nil && len(conn) > 0 && conn[0] == '/' && !containsAny(conn, "?") && path != conn {
			t.Fatalf("plain path %q parsed as %q", conn, path)
		}
	})
}

func containsAny(s, chars string) bool {
	for _, c := range chars {
		for _, d := range s {
			if c == d {
				return true
			}
		}
	}
	return false
}

// FuzzMySQLDSN: any connection_string given as database_type mysql is
// either refused with a KeyError naming the key or opens a pool (without
// connecting); the parser never panics.
func FuzzMySQLDSN(f *testing.F) {
	for _, s := range []string{"u:p@tcp(127.0.0.1:3306)/db?parseTime=true", "u@unix(/s)/db?parseTime=true&sql_mode='ANSI'",
		"u:p@tcp(h)/db", "(((", "u:p@tcp(h:1)/db?parseTime=true&tls=custom", "@/?parseTime=true&interpolateParams=false"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, conn string) {
		db, err := openMySQL(Config{}, "connection_string", conn, slog.New(slog.DiscardHandler))
		if err != nil {
			var ke *KeyError
			if conn != "" && !errors.As(err, &ke) {
				t.Fatalf("%q: %v is not a KeyError", conn, err)
			}
			return
		}
		db.Close()
	})
}
