// Package mariadb starts a throwaway MariaDB server for tests, so the SQL
// datastore's MySQL dialect is tested against a real engine rather than a
// stand-in.
//
// Start returns a connection string, in the go-sql-driver/mysql format
// SPIRE's connection_string uses, for a database and a user of the test's
// own. With MYSQL_TEST_DSN set (an account that may create databases and
// users) it uses that server; otherwise it runs mariadb-install-db and
// mariadbd from Debian's mariadb-server package in a temporary directory
// (own data directory, Unix socket and loopback port, grant tables on), as
// the mysql system user when the test runs as root. The server speaks TLS
// with a certificate from a test CA, which StartTLS hands out with a client
// certificate for a user that must present one. A test binary that calls
// Main from its TestMain shares one server among its tests; without Main
// each test gets, and stops, its own.
package mariadb

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

var (
	mu         sync.Mutex
	mainActive bool
	shared     *server
	sharedErr  error
	dbSeq      atomic.Int64
)

// Main runs the tests of a binary with one shared server, started by the
// first Start, and stops it afterwards. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }
func Main(m *testing.M) int {
	stop := Share()
	defer stop()
	return m.Run()
}

// Share is Main for a TestMain that already hands m to another Main (say
// sim/postgres's): from now on Start shares one server, which stop stops.
//
//	stop := mariadb.Share()
//	code := postgres.Main(m)
//	stop()
//	os.Exit(code)
func Share() (stop func()) {
	mu.Lock()
	mainActive = true
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if shared != nil {
			shared.stop()
			shared = nil
		}
		mainActive, sharedErr = false, nil
	}
}

// Start returns a connection string (user:password@tcp(host:port)/db with
// parseTime=true) for a new, empty database and a user allowed only that
// database, both dropped when the test ends. It skips the test (or fails it
// under REQUIRE_SIM=1) when no server can be started.
func Start(tb testing.TB) string {
	tb.Helper()
	dsn, _ := start(tb, "")
	return dsn
}

// TLSFiles locates what a client needs to reach the server over TLS.
type TLSFiles struct {
	// DSN is for a user that must present a client certificate (REQUIRE
	// X509); it does not ask for TLS itself, so that the client's TLS
	// settings decide.
	DSN string
	// CAFile holds the PEM certificate of the CA that issued the server's
	// and the client's certificates.
	CAFile string
	// CertFile and KeyFile are the client's certificate and PKCS#8 key.
	CertFile, KeyFile string
}

// StartTLS is Start for a user that the server admits only over TLS with a
// client certificate from its CA. It skips with MYSQL_TEST_DSN, whose CA
// this package does not know.
func StartTLS(tb testing.TB) TLSFiles {
	tb.Helper()
	if os.Getenv("MYSQL_TEST_DSN") != "" {
		simtest.Skip(tb, "mariadb: MYSQL_TEST_DSN is set: the TLS test needs the private server's test CA")
		return TLSFiles{}
	}
	dsn, srv := start(tb, " REQUIRE X509")
	if srv == nil {
		return TLSFiles{}
	}
	return TLSFiles{DSN: dsn, CAFile: srv.caFile, CertFile: srv.clientCert, KeyFile: srv.clientKey}
}

func start(tb testing.TB, require string) (string, *server) {
	tb.Helper()
	admin := os.Getenv("MYSQL_TEST_DSN")
	var srv *server
	if admin == "" {
		var err error
		if srv, err = server0(tb); err != nil {
			simtest.Skip(tb, "mariadb: "+err.Error())
			return "", nil
		}
		admin = srv.adminDSN()
	}
	adminCfg, err := mysql.ParseDSN(admin)
	if err != nil {
		tb.Fatalf("mariadb: admin DSN: %v", err)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbSeq.Add(1))
	password := randomHex(12)
	stmts := []string{
		"CREATE DATABASE " + name,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'%s", name, password, require),
		fmt.Sprintf("GRANT ALL PRIVILEGES ON %s.* TO '%s'@'%%'", name, name),
	}
	if err := adminExec(admin, stmts...); err != nil {
		tb.Fatalf("mariadb: create database and user: %v", err)
	}
	tb.Cleanup(func() {
		if err := adminExec(admin, "DROP DATABASE IF EXISTS "+name, fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", name)); err != nil {
			tb.Errorf("mariadb: drop database and user: %v", err)
		}
	})
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName, cfg.ParseTime = name, password, name, true
	if srv != nil {
		cfg.Net, cfg.Addr = "tcp", srv.addr()
	} else {
		// The test user reaches an external server the way its admin does.
		cfg.Net, cfg.Addr, cfg.TLSConfig = adminCfg.Net, adminCfg.Addr, adminCfg.TLSConfig
	}
	return cfg.FormatDSN(), srv
}

// server0 returns the shared server under Main, or a per-test one.
func server0(tb testing.TB) (*server, error) {
	mu.Lock()
	defer mu.Unlock()
	if !mainActive {
		srv, err := startServer(false)
		if err != nil {
			return nil, err
		}
		tb.Cleanup(srv.stop)
		return srv, nil
	}
	if shared == nil && sharedErr == nil {
		shared, sharedErr = startServer(false)
	}
	return shared, sharedErr
}

func adminExec(dsn string, stmts ...string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, stmt := range stmts {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(stmt, " IDENTIFIED", 2)[0], err)
		}
	}
	return nil
}

type server struct {
	dir                           string
	port                          int
	caFile, clientCert, clientKey string
	// mariadbd, data and cred start the server again (see Instance).
	mariadbd, data string
	cred           *syscall.Credential
	durable        bool
	cmd            *exec.Cmd
	done           chan struct{}
}

// adminDSN reaches the server as root over its Unix socket, which
// mariadb-install-db left without a password.
func (s *server) adminDSN() string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", s.socket()
	return cfg.FormatDSN()
}

func (s *server) socket() string { return filepath.Join(s.dir, "mysql.sock") }

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// binary finds a program of the mariadb-server package under its current
// name or its older mysql one.
func binary(names ...string) (string, error) {
	for _, n := range names {
		for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
			p := filepath.Join(dir, n)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (install the mariadb-server package or set MYSQL_TEST_DSN)", names[0])
}

// startServer installs and runs a server in a new directory. durable
// makes every commit reach the operating system before it is acknowledged
// (innodb_flush_log_at_trx_commit 2), so that it survives a kill of the
// server; the shared servers skip it, for speed.
func startServer(durable bool) (*server, error) {
	installDB, err := binary("mariadb-install-db", "mysql_install_db")
	if err != nil {
		return nil, err
	}
	mariadbd, err := binary("mariadbd", "mysqld")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mariadbsim-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root.
		u, err := user.Lookup("mysql")
		if err != nil {
			return fail(fmt.Errorf("running as root needs the mysql user: %w", err))
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
	}
	s := &server{dir: dir, mariadbd: mariadbd, cred: cred, durable: durable}
	if err := s.writeTLSFiles(uid, gid); err != nil {
		return fail(err)
	}
	data := filepath.Join(dir, "data")
	install := exec.Command(installDB, "--no-defaults", "--datadir="+data,
		// A root without a password on the socket alone: the test's own
		// users log in with passwords over TCP.
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	install.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("mariadb-install-db: %v: %s", err, lastLines(string(out), 10)))
	}
	if s.port, err = freePort(); err != nil {
		return fail(err)
	}
	s.data = data
	if err := s.launch(); err != nil {
		return fail(err)
	}
	return s, nil
}

// launch runs mariadbd on the server's data directory and port and waits
// until it accepts connections.
func (s *server) launch() error {
	logFile := filepath.Join(s.dir, "mariadb.log")
	flushAtCommit := "0"
	if s.durable {
		flushAtCommit = "2"
	}
	cmd := exec.Command(s.mariadbd, "--no-defaults", "--datadir="+s.data, "--socket="+s.socket(),
		"--port="+strconv.Itoa(s.port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--pid-file="+filepath.Join(s.dir, "mariadb.pid"), "--log-error="+logFile, "--tmpdir="+s.dir,
		"--skip-log-bin", "--max-connections=500",
		"--ssl-ca="+s.caFile, "--ssl-cert="+filepath.Join(s.dir, "server.pem"), "--ssl-key="+filepath.Join(s.dir, "server.key"),
		// Durability against a crash of the machine is worthless for a
		// throwaway server and costs seconds; against a kill of the
		// server (the log written at commit, never synced) it costs
		// little.
		"--innodb-flush-method=nosync", "--innodb-flush-log-at-trx-commit="+flushAtCommit, "--innodb-doublewrite=0",
		"--innodb-buffer-pool-size=64M")
	cmd.SysProcAttr = procAttr(s.cred)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() { _ = cmd.Wait(); close(done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("mariadbd exited: %s", lastLines(string(log), 10))
		default:
		}
		if err := ping(s.adminDSN()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.halt()
			return fmt.Errorf("mariadbd not ready after 60s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeTLSFiles makes the test CA, the server's certificate for the
// loopback address and a client certificate, as PEM files the server user
// can read.
func (s *server) writeTLSFiles(uid, gid int) error {
	ca, err := testpki.NewRoot("mariadb sim test CA")
	if err != nil {
		return err
	}
	srvCert, srvKey, err := ca.Issue(testpki.Leaf{CommonName: "127.0.0.1",
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}})
	if err != nil {
		return err
	}
	cliCert, cliKey, err := ca.Issue(testpki.Leaf{CommonName: "mariadb sim client"})
	if err != nil {
		return err
	}
	srvKeyPEM, err := testpki.KeyPEM(srvKey)
	if err != nil {
		return err
	}
	cliKeyPEM, err := testpki.KeyPEM(cliKey)
	if err != nil {
		return err
	}
	s.caFile = filepath.Join(s.dir, "ca.pem")
	s.clientCert = filepath.Join(s.dir, "client.pem")
	s.clientKey = filepath.Join(s.dir, "client.key")
	for name, data := range map[string][]byte{
		"ca.pem": testpki.CertsPEM(ca.Cert), "server.pem": testpki.CertsPEM(srvCert), "server.key": srvKeyPEM,
		"client.pem": testpki.CertsPEM(cliCert), "client.key": cliKeyPEM,
	} {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		if uid >= 0 {
			if err := os.Chown(p, uid, gid); err != nil {
				return err
			}
		}
	}
	return nil
}

func ping(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// stop shuts the server down and removes its directory.
func (s *server) stop() {
	s.halt()
	os.RemoveAll(s.dir)
}

// halt shuts the server down (SIGTERM: a normal shutdown), keeping its
// data directory; a halted server does nothing.
func (s *server) halt() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// kill ends the server with SIGKILL, as a crash or the kernel's OOM
// killer would (no shutdown: connections are cut, and the next launch
// recovers from the redo log), keeping its data directory.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Instance is a MariaDB server of one test's own, which the test may stop
// and start again on the same data directory and port, to see what its
// clients do while the database is away and after it is back.
type Instance struct {
	mu  sync.Mutex
	srv *server
	dsn string
}

// StartInstance starts a server of the test's own (never the shared one,
// nor MYSQL_TEST_DSN's) with one empty database and its user, stopped and
// removed when the test ends. It skips the test (or fails it under
// REQUIRE_SIM=1) when no server can be started.
func StartInstance(tb testing.TB) *Instance {
	tb.Helper()
	srv, err := startServer(true)
	if err != nil {
		simtest.Skip(tb, "mariadb: "+err.Error())
		return nil
	}
	tb.Cleanup(srv.stop)
	password := randomHex(12)
	if err := adminExec(srv.adminDSN(), "CREATE DATABASE test",
		fmt.Sprintf("CREATE USER 'test'@'%%' IDENTIFIED BY '%s'", password),
		"GRANT ALL PRIVILEGES ON test.* TO 'test'@'%'"); err != nil {
		tb.Fatalf("mariadb: create database and user: %v", err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName, cfg.ParseTime = "test", password, "test", true
	cfg.Net, cfg.Addr = "tcp", srv.addr()
	return &Instance{srv: srv, dsn: cfg.FormatDSN()}
}

// DSN is the connection string of the instance's database; it stays the
// same across Stop and Start.
func (i *Instance) DSN() string { return i.dsn }

// Stop shuts the server down (its clients are disconnected); the data
// stays for Start.
func (i *Instance) Stop() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.srv.halt()
}

// Kill ends the server with SIGKILL; the data stays for Start, which
// recovers it. Every commit acknowledged before is kept.
func (i *Instance) Kill() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.srv.kill()
}

// Start runs the stopped server again on its data directory and port and
// waits until it accepts connections.
func (i *Instance) Start() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.srv.cmd != nil {
		return errors.New("mariadb: instance is running")
	}
	return i.srv.launch()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
