// Package postgres starts a throwaway PostgreSQL server for tests, so the
// SQL datastore is tested against the real engine rather than a stand-in.
//
// Start returns a connection string for a database of the test's own. With
// PG_TEST_DSN set it uses that server; otherwise it runs initdb and postgres
// from the Debian packages (/usr/lib/postgresql/*/bin) in a temporary
// directory, as the postgres system user when the test runs as root (the
// server refuses to run as root). A test binary that calls Main from its
// TestMain shares one server among its tests; without Main each test gets,
// and stops, its own.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/spiffe-hw/spire-hw/sim/simtest"
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
//	func TestMain(m *testing.M) { os.Exit(postgres.Main(m)) }
func Main(m *testing.M) int {
	mu.Lock()
	mainActive = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
	mu.Unlock()
	return code
}

// Start returns a connection string (libpq keyword form or URL) for a new,
// empty database that is dropped when the test ends. It skips the test (or
// fails it under REQUIRE_SIM=1) when no server can be started.
func Start(tb testing.TB) string {
	tb.Helper()
	admin := os.Getenv("PG_TEST_DSN")
	if admin == "" {
		srv, err := server0(tb)
		if err != nil {
			simtest.Skip(tb, "postgres: "+err.Error())
			return ""
		}
		admin = srv.dsn("postgres")
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := adminExec(admin, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("postgres: create database: %v", err)
	}
	tb.Cleanup(func() {
		if err := adminExec(admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("postgres: drop database: %v", err)
		}
	})
	return withDatabase(admin, name)
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

func adminExec(dsn, stmt string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// withDatabase points dsn at database name, in either connection string
// form. In keyword form a later key overrides an earlier one.
func withDatabase(dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path = "/" + name
			return u.String()
		}
	}
	return dsn + " dbname=" + name
}

type server struct {
	dir  string
	port int
	// bin, data and cred start the server again (see Instance).
	bin, data string
	cred      *syscall.Credential
	durable   bool
	cmd       *exec.Cmd
	done      chan struct{}
}

func (s *server) dsn(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.dir, s.port, db)
}

// binDir finds the newest installed server binaries.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("initdb not found (install the postgresql package or set PG_TEST_DSN)")
}

// startServer runs initdb and a server in a new directory. durable makes
// every commit reach the operating system before it is acknowledged
// (synchronous_commit), so that it survives a kill of the server; the
// shared servers skip it, for speed.
func startServer(durable bool) (*server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, cred, err := serverDir()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v: %s", err, lastLines(string(out), 10)))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	s := &server{dir: dir, port: port, bin: bin, data: data, cred: cred, durable: durable}
	if err := s.launch(); err != nil {
		return fail(err)
	}
	return s, nil
}

// serverDir makes a temporary directory for a server's data, socket and
// log, owned by the postgres user when the test runs as root (cred is then
// whom the server runs as; nil otherwise).
func serverDir() (string, *syscall.Credential, error) {
	dir, err := os.MkdirTemp("", "pgsim-")
	if err != nil {
		return "", nil, err
	}
	if os.Geteuid() != 0 {
		return dir, nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("running as root needs the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// launch runs postgres on the server's data directory and port and waits
// until it accepts connections.
func (s *server) launch() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// Durability against a crash of the machine is worthless for a
	// throwaway server and costs seconds; against a kill of the server
	// (the WAL written at commit, never synced) it costs little.
	syncCommit := "synchronous_commit=off"
	if s.durable {
		syncCommit = "synchronous_commit=on"
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.data, "-k", s.dir, "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", syncCommit, "-c", "full_page_writes=off")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr(s.cred)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	logf.Close()
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() { _ = cmd.Wait(); close(done) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
			return fmt.Errorf("postgres exited: %s", lastLines(string(log), 10))
		default:
		}
		if err := ping(s.dsn("postgres")); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.halt()
			return fmt.Errorf("postgres not ready after 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(dsn string) error {
	db, err := sql.Open("pgx", dsn)
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

// halt shuts the server down (fast mode: clients are disconnected),
// keeping its data directory; a halted server does nothing.
func (s *server) halt() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// kill ends the server and every backend with SIGKILL, as a crash or the
// kernel's OOM killer would (no shutdown: connections are cut, and the
// next launch recovers from the WAL), keeping its data directory.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	killTree(s.cmd.Process.Pid)
	<-s.done
	s.cmd = nil
}

// Instance is a PostgreSQL server of one test's own, which the test may
// stop and start again on the same data directory and port, to see what
// its clients do while the database is away and after it is back.
type Instance struct {
	mu  sync.Mutex
	srv *server
	dsn string
}

// StartInstance starts a server of the test's own (never the shared one,
// nor PG_TEST_DSN's) with one empty database, stopped and removed when the
// test ends. It skips the test (or fails it under REQUIRE_SIM=1) when no
// server can be started.
func StartInstance(tb testing.TB) *Instance {
	tb.Helper()
	srv, err := startServer(true)
	if err != nil {
		simtest.Skip(tb, "postgres: "+err.Error())
		return nil
	}
	tb.Cleanup(srv.stop)
	if err := adminExec(srv.dsn("postgres"), "CREATE DATABASE test"); err != nil {
		tb.Fatalf("postgres: create database: %v", err)
	}
	return &Instance{srv: srv, dsn: srv.dsn("test")}
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

// Kill ends the server with SIGKILL, its backends too; the data stays for
// Start, which recovers it. Every commit acknowledged before is kept.
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
		return errors.New("postgres: instance is running")
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

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
