package mariadb

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func open(t *testing.T, cfg *mysql.Config) *sql.DB {
	t.Helper()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

func parse(t *testing.T, dsn string) *mysql.Config {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestDatabasesAreIsolated checks that Start gives each caller a working,
// empty database of its own on one shared server, and a user that cannot
// reach another caller's database.
func TestDatabasesAreIsolated(t *testing.T) {
	dsnA, dsnB := Start(t), Start(t)
	cfgA, cfgB := parse(t, dsnA), parse(t, dsnB)
	if !cfgA.ParseTime || cfgA.DBName == cfgB.DBName || cfgA.User == cfgB.User {
		t.Fatalf("DSNs %q and %q: want parseTime and a database and user each", dsnA, dsnB)
	}
	a, b := open(t, cfgA), open(t, cfgB)
	if _, err := a.Exec(`CREATE TABLE only_in_a (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(`SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'only_in_a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a table created in one database is visible to another database's user")
	}
	_, err := b.Exec(`SELECT * FROM ` + cfgA.DBName + `.only_in_a`)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || (me.Number != 1142 && me.Number != 1044) {
		t.Fatalf("another database's table read: %v, want access denied", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if os.Getenv("MYSQL_TEST_DSN") == "" && shared == nil {
		t.Fatal("Main did not make the server shared")
	}
}

// TestTLS: the StartTLS user gets in only over TLS with the client
// certificate, and the server's certificate verifies against the CA for
// the loopback address.
func TestTLS(t *testing.T) {
	files := StartTLS(t)
	pem, err := os.ReadFile(files.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate in", files.CAFile)
	}
	client, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}

	plain := parse(t, files.DSN)
	if err := open(t, plain).Ping(); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("login without TLS: %v, want access denied", err)
	}
	noCert := parse(t, files.DSN)
	noCert.TLS = &tls.Config{RootCAs: roots}
	if err := open(t, noCert).Ping(); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("login over TLS without a client certificate: %v, want access denied", err)
	}
	withCert := parse(t, files.DSN)
	withCert.TLS = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}}
	db := open(t, withCert)
	var name, cipher string
	if err := db.QueryRow(`SHOW SESSION STATUS LIKE 'Ssl_cipher'`).Scan(&name, &cipher); err != nil {
		t.Fatalf("login with the client certificate: %v", err)
	}
	if cipher == "" {
		t.Fatal("session is not encrypted")
	}
	// Another CA's server certificate would not verify.
	other := parse(t, files.DSN)
	other.TLS = &tls.Config{RootCAs: x509.NewCertPool(), Certificates: []tls.Certificate{client}}
	if err := open(t, other).Ping(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("server certificate verified against an empty pool: %v", err)
	}
}
