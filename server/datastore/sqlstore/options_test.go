package sqlstore

import (
	"bytes"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

// TestKeyErrors: a key an engine cannot use, or a value it cannot take,
// is refused with the key's name, before anything is connected to.
func TestKeyErrors(t *testing.T) {
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(pemFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	sqlite := filepath.Join(dir, "ds.sqlite3")
	const my = "u:p@tcp(127.0.0.1:1)/db?parseTime=true"
	for _, tc := range []struct {
		name string
		cfg  Config
		key  string
		msg  string
	}{
		{"sqlite with a root CA", Config{DatabaseType: SQLite, ConnectionString: sqlite, RootCAPath: pemFile}, "root_ca_path", "SQLite is a local file"},
		{"sqlite with a client key", Config{DatabaseType: SQLite, ConnectionString: sqlite, ClientKeyPath: pemFile}, "client_key_path", "SQLite is a local file"},
		{"in-memory sqlite with a lifetime", Config{DatabaseType: SQLite, ConnectionString: ":memory:", ConnMaxLifetime: time.Minute}, "conn_max_lifetime", "in-memory"},
		{"in-memory sqlite replica", Config{DatabaseType: SQLite, ConnectionString: sqlite, ROConnectionString: ":memory:"}, "ro_connection_string", "in-memory"},
		{"mysql without parseTime", Config{DatabaseType: MySQL, ConnectionString: "u:p@tcp(127.0.0.1:1)/db"}, "connection_string", "missing parseTime=true"},
		{"mysql replica without parseTime", Config{DatabaseType: MySQL, ConnectionString: my, ROConnectionString: "u:p@tcp(127.0.0.1:1)/db"}, "ro_connection_string", "missing parseTime=true"},
		{"mysql bad DSN", Config{DatabaseType: MySQL, ConnectionString: "no-at-sign(("}, "connection_string", ""},
		{"mysql certificate without key", Config{DatabaseType: MySQL, ConnectionString: my, ClientCertPath: pemFile}, "client_key_path", "is required"},
		{"mysql key without certificate", Config{DatabaseType: MySQL, ConnectionString: my, ClientKeyPath: pemFile}, "client_cert_path", "is required"},
		{"mysql unreadable root CA", Config{DatabaseType: MySQL, ConnectionString: my, RootCAPath: filepath.Join(dir, "missing.pem")}, "root_ca_path", "cannot read"},
		{"mysql root CA without PEM", Config{DatabaseType: MySQL, ConnectionString: my, RootCAPath: pemFile}, "root_ca_path", "no PEM certificate"},
		{"mysql TLS over a socket", Config{DatabaseType: MySQL, ConnectionString: "u:p@unix(/tmp/x.sock)/db?parseTime=true", RootCAPath: testCAFile(t)}, "connection_string", "Unix socket"},
		{"postgres TLS with sslmode=disable", Config{DatabaseType: Postgres, ConnectionString: "host=127.0.0.1 port=1 sslmode=disable", RootCAPath: testCAFile(t)}, "connection_string", "would not use TLS"},
	} {
		_, err := Open(ctx, tc.cfg)
		var ke *KeyError
		if !errors.As(err, &ke) {
			t.Errorf("%s: error %v, want a KeyError", tc.name, err)
			continue
		}
		if ke.Key != tc.key || !strings.Contains(ke.Msg, tc.msg) {
			t.Errorf("%s: KeyError{%q, %q}, want key %q and %q", tc.name, ke.Key, ke.Msg, tc.key, tc.msg)
		}
	}
}

// testCAFile writes a real CA certificate and returns its path.
func testCAFile(t *testing.T) string {
	t.Helper()
	ca, err := testpki.NewRoot("test CA")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, testpki.CertsPEM(ca.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPostgresTLSRequired: the TLS keys make every host pgx may try verify
// the server's name and chain, and drop sslmode=prefer's plaintext retry.
func TestPostgresTLSRequired(t *testing.T) {
	pc, err := pgx.ParseConfig("host=db1.example,db2.example port=5432 sslmode=prefer")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{RootCAPath: testCAFile(t)}
	tc, err := cfg.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := requirePostgresTLS(pc, tc); err != nil {
		t.Fatal(err)
	}
	if pc.TLSConfig == nil || pc.TLSConfig.ServerName != "db1.example" || pc.TLSConfig.InsecureSkipVerify || pc.TLSConfig.RootCAs == nil {
		t.Fatalf("primary TLS config %+v", pc.TLSConfig)
	}
	if len(pc.Fallbacks) != 1 || pc.Fallbacks[0].Host != "db2.example" || pc.Fallbacks[0].TLSConfig.ServerName != "db2.example" {
		t.Fatalf("fallbacks %+v: want db2.example over TLS only", pc.Fallbacks)
	}
}

// TestPoolKeys: max_open_conns and max_idle_conns size the pools (SPIRE's
// 100 by default on the server engines; SQLite's writer stays one).
func TestPoolKeys(t *testing.T) {
	seven, three := 7, 3
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			def := openStore(t, engine.cfg(t))
			cfg := engine.cfg(t)
			cfg.MaxOpenConns, cfg.MaxIdleConns, cfg.ConnMaxLifetime = &seven, &three, time.Hour
			s := openStore(t, cfg)
			if got := s.r.Stats().MaxOpenConnections; got != 7 {
				t.Errorf("read pool max open %d, want 7", got)
			}
			if engine.name == "sqlite" {
				if got := s.w.Stats().MaxOpenConnections; got != 1 {
					t.Errorf("SQLite writer max open %d, want 1", got)
				}
				return
			}
			if got := def.w.Stats().MaxOpenConnections; got != 100 {
				t.Errorf("default max open %d, want SPIRE's 100", got)
			}
		})
	}
}

// TestReplicaReads: with ro_connection_string, reads that tolerate lag go
// to the replica and every other read and write to the primary. The
// "replica" here is another database with different contents, which tells
// the two apart.
func TestReplicaReads(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			replica := engine.cfg(t)
			rs := openStore(t, replica)
			mustCreate(t, rs, &types.Entry{Id: "on-replica", SpiffeId: sid("td", "/r"), ParentId: sid("td", "/p")})
			if err := rs.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: "spiffe://td/replica-node", AttestationType: "x"}); err != nil {
				t.Fatal(err)
			}
			rs.Close()

			cfg := engine.cfg(t)
			cfg.ROConnectionString = replica.ConnectionString
			s := openStore(t, cfg)
			mustCreate(t, s, &types.Entry{Id: "on-primary", SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p")})
			for _, tc := range []struct {
				c    datastore.DataConsistency
				want string
			}{{datastore.RequireCurrent, "on-primary"}, {datastore.TolerateStale, "on-replica"}} {
				got, _, err := s.ListEntries(ctx, &datastore.ListEntriesRequest{DataConsistency: tc.c})
				if err != nil || len(got) != 1 || got[0].Id != tc.want {
					t.Errorf("ListEntries(consistency %d) = %v, %v; want %s", tc.c, ids(got), err, tc.want)
				}
			}
			nodes, _, err := s.ListAttestedNodes(ctx, &datastore.ListAttestedNodesRequest{DataConsistency: datastore.TolerateStale})
			if err != nil || len(nodes) != 1 || nodes[0].SPIFFEID != "spiffe://td/replica-node" {
				t.Errorf("stale node listing %v, %v: want the replica's node", nodeIDs(nodes), err)
			}
			if nodes, _, _ := s.ListAttestedNodes(ctx, nil); len(nodes) != 0 {
				t.Errorf("current node listing %v: want the primary's (none)", nodeIDs(nodes))
			}
			// The events that servers poll: the replica has its entry's
			// and node's, the primary only its entry's.
			for _, tc := range []struct {
				c     datastore.DataConsistency
				kind  datastore.EventKind
				wantK string
			}{
				{datastore.TolerateStale, datastore.EntryEvents, "on-replica"},
				{datastore.TolerateStale, datastore.NodeEvents, "spiffe://td/replica-node"},
				{datastore.RequireCurrent, datastore.EntryEvents, "on-primary"},
			} {
				evs, err := s.ListEvents(ctx, tc.kind, 0, 0, tc.c)
				if err != nil || len(evs) != 1 || evs[0].Key != tc.wantK {
					t.Errorf("ListEvents(%v, consistency %d) = %v, %v; want one event for %s", tc.kind, tc.c, evs, err, tc.wantK)
					continue
				}
				got, err := s.FetchEvents(ctx, tc.kind, []int64{evs[0].ID}, tc.c)
				if err != nil || len(got) != 1 || got[0] != evs[0] {
					t.Errorf("FetchEvents(%v, consistency %d) = %v, %v; want %v", tc.kind, tc.c, got, err, evs[0])
				}
			}
			if evs, err := s.ListEvents(ctx, datastore.NodeEvents, 0, 0, datastore.RequireCurrent); err != nil || len(evs) != 0 {
				t.Errorf("current node events %v, %v: want the primary's (none)", evs, err)
			}
		})
	}
}

// TestReplicaFailsOver: a read meant for the replica that the replica
// fails is answered by the primary, and the switch each way is logged
// once. The replica here is a pool closed under the store, which fails
// every read as a replica that went away does.
func TestReplicaFailsOver(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			replica := engine.cfg(t)
			openStore(t, replica).Close()
			var logs syncBuffer
			cfg := engine.cfg(t)
			cfg.ROConnectionString = replica.ConnectionString
			cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
			s := openStore(t, cfg)
			mustCreate(t, s, &types.Entry{Id: "on-primary", SpiffeId: sid("td", "/w"), ParentId: sid("td", "/p")})
			stale := func() []datastore.Event {
				t.Helper()
				evs, err := s.ListEvents(ctx, datastore.EntryEvents, 0, 0, datastore.TolerateStale)
				if err != nil {
					t.Fatalf("stale ListEvents: %v", err)
				}
				return evs
			}
			if evs := stale(); len(evs) != 0 {
				t.Fatalf("stale events %v with the replica up: want the replica's (none)", evs)
			}
			// Swap in a closed pool: every read of it fails.
			up := s.ro
			down, err := s.openReplica(cfg)
			if err != nil {
				t.Fatal(err)
			}
			down.Close()
			s.ro = down
			for range 3 {
				if evs := stale(); len(evs) != 1 || evs[0].Key != "on-primary" {
					t.Fatalf("stale events %v with the replica down: want the primary's", evs)
				}
				if evs, err := s.FetchEvents(ctx, datastore.EntryEvents, []int64{1}, datastore.TolerateStale); err != nil || len(evs) != 1 {
					t.Fatalf("stale FetchEvents with the replica down: %v, %v", evs, err)
				}
			}
			s.ro = up
			if evs := stale(); len(evs) != 0 {
				t.Fatalf("stale events %v with the replica back: want the replica's again", evs)
			}
			out := logs.String()
			if n := strings.Count(out, "a read from the replica (ro_connection_string) failed"); n != 1 {
				t.Errorf("failure logged %d times, want once:\n%s", n, out)
			}
			if n := strings.Count(out, "reading from the replica (ro_connection_string) again"); n != 1 {
				t.Errorf("recovery logged %d times, want once:\n%s", n, out)
			}
		})
	}
}

// TestDisableMigration: with disable_migration a new database is still
// initialized, one at the current version opens, and an older one is
// refused, untouched, until a server without the key migrates it.
func TestDisableMigration(t *testing.T) {
	saved := migrations
	t.Cleanup(func() { migrations, schemaVersion = saved, len(saved) })
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			t.Cleanup(func() { migrations, schemaVersion = saved, len(saved) })
			fresh := engine.cfg(t)
			fresh.DisableMigration = true
			openStore(t, fresh).Close()

			old := engine.cfg(t)
			migrations, schemaVersion = saved[:1], 1
			openStore(t, old).Close()
			migrations, schemaVersion = saved, len(saved)

			old.DisableMigration = true
			_, err := Open(ctx, old)
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != "disable_migration" || !strings.Contains(ke.Msg, "auto-migration must be enabled") {
				t.Fatalf("Open of an old schema with disable_migration: %v", err)
			}
			old.DisableMigration = false
			s := openStore(t, old)
			if _, _, err := s.ListFederationRelationships(ctx, nil); err != nil {
				t.Fatalf("after migrating: %v", err)
			}
		})
	}
}

// syncBuffer is a log sink for handlers that write from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestLogSQL: log_sql logs statements at debug level and never their
// arguments (a join token is a secret).
func TestLogSQL(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			var buf syncBuffer
			cfg := engine.cfg(t)
			cfg.Log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			quiet := openStore(t, cfg)
			if err := quiet.CreateJoinToken(ctx, &datastore.JoinToken{Token: "quiet-token", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(buf.String(), "INSERT INTO join_tokens") {
				t.Fatal("statements logged without log_sql")
			}
			cfg.LogSQL = true
			s := openStore(t, cfg)
			if err := s.CreateJoinToken(ctx, &datastore.JoinToken{Token: "secret-token", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "INSERT INTO join_tokens") {
				t.Fatalf("log_sql logged no statement:\n%s", out)
			}
			if strings.Contains(out, "secret-token") {
				t.Fatal("log_sql logged a join token")
			}
		})
	}
}

// TestMySQLTLS connects to the private MariaDB with root_ca_path and a
// client certificate, as a user the server admits only that way.
func TestMySQLTLS(t *testing.T) {
	files := mariadb.StartTLS(t)
	base := Config{DatabaseType: MySQL, ConnectionString: files.DSN}

	// Without the TLS keys the server refuses the user.
	if _, err := Open(ctx, base); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("Open without TLS: %v, want access denied", err)
	}
	noCert := base
	noCert.RootCAPath = files.CAFile
	if _, err := Open(ctx, noCert); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("Open with TLS but no client certificate: %v, want access denied", err)
	}
	// A server certificate from another CA does not verify.
	wrongCA := base
	wrongCA.RootCAPath, wrongCA.ClientCertPath, wrongCA.ClientKeyPath = testCAFile(t), files.CertFile, files.KeyFile
	if _, err := Open(ctx, wrongCA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Open trusting another CA: %v, want a certificate error", err)
	}

	cfg := base
	cfg.RootCAPath, cfg.ClientCertPath, cfg.ClientKeyPath = files.CAFile, files.CertFile, files.KeyFile
	// The replica key takes the same TLS settings.
	cfg.ROConnectionString = files.DSN
	s := openStore(t, cfg)
	for pool, db := range map[string]*sql.DB{"primary": s.w, "replica": s.ro} {
		var name, cipher string
		if err := db.QueryRow(`SHOW SESSION STATUS LIKE 'Ssl_cipher'`).Scan(&name, &cipher); err != nil || cipher == "" {
			t.Fatalf("%s session cipher %q, %v: want TLS", pool, cipher, err)
		}
	}
	mustCreate(t, s, &types.Entry{SpiffeId: sid("td", "/tls"), ParentId: sid("td", "/p")})
	if n, err := s.CountEntries(ctx, nil); err != nil || n != 1 {
		t.Fatalf("CountEntries over TLS = %d, %v", n, err)
	}
}

// TestMySQLStrict: a value longer than its column is an error, never a
// truncated ID: the store's sessions are strict for every table whatever
// the server's sql_mode (MariaDB's default is strict for transactional
// tables only), and keep the server's other modes.
func TestMySQLStrict(t *testing.T) {
	s := openStore(t, mysqlConfig(t))
	var mode string
	if err := s.w.QueryRow(`SELECT @@SESSION.sql_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mode, "STRICT_ALL_TABLES") || !strings.Contains(mode, "NO_ENGINE_SUBSTITUTION") {
		t.Fatalf("session sql_mode %q: want STRICT_ALL_TABLES added to the server's modes", mode)
	}
	long := "/" + strings.Repeat("x", 300)
	_, err := s.CreateEntry(ctx, &types.Entry{SpiffeId: sid("td", long), ParentId: sid("td", "/p")})
	if err == nil || !strings.Contains(err.Error(), "Data too long") {
		t.Fatalf("over-long SPIFFE ID: %v, want Data too long", err)
	}
	if n, err := s.CountEntries(ctx, nil); err != nil || n != 0 {
		t.Fatalf("CountEntries after the refused entry = %d, %v", n, err)
	}
}
