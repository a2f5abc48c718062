package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/childproc"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/sim/fleet"
	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// failoverName is the server_address of the failover test's agent: in the
// agent's own mount namespace, /etc/hosts gives it the three servers'
// addresses, as a DNS name with three A records would.
const failoverName = "spire-servers.failover.test"

// startServerAt runs a join-token server of example.org on ip:port whose
// datastore is the database dsn of databaseType, shared with the other
// servers; its CA key is its own.
func startServerAt(t *testing.T, databaseType, dsn, ip string, port int) *serverEnv {
	t.Helper()
	dir := shortTempDir(t)
	s := &serverEnv{dir: dir, socket: filepath.Join(dir, "server.sock"), conf: filepath.Join(dir, "server.conf"), port: port, ip: ip}
	conf := fmt.Sprintf(`server {
    bind_address = %q
    bind_port = "%d"
    socket_path = %q
    trust_domain = "example.org"
    data_dir = %q
    log_level = "DEBUG"
    # The simulated fleet attests hundreds of agents from one address.
    ratelimit {
        attestation = false
    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = %q
            connection_string = %q
            max_open_conns = 20
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = %q
        }
    }
    %s
}
`, ip, port, s.socket, filepath.Join(dir, "data"), databaseType, dsn, filepath.Join(dir, "data/keys.json"), joinTokenAttestor)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// admin is a connection to the server's admin socket.
func (s *serverEnv) admin(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startAgentWithHosts starts the agent a in a mount namespace of its own
// whose /etc/hosts is hosts, and waits until its Workload API answers.
func startAgentWithHosts(t *testing.T, a *agentEnv, hosts, token string) {
	t.Helper()
	out := &syncbuf.Buffer{}
	cp, err := childproc.Start(a.dir, out, nil, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts,
		bin("spire-agent"), "run", "-config", a.conf, "-joinToken", token)
	if err != nil {
		t.Fatal(err)
	}
	a.proc = &proc{Proc: cp, out: out}
	t.Cleanup(func() {
		a.proc.Stop()
		if t.Failed() {
			t.Logf("--- spire-agent output:\n%s", out.String())
		}
	})
	eventually(t, 20*time.Second, "agent healthcheck", func() error {
		if done, code := a.proc.exited(); done {
			t.Fatalf("agent exited with %d:\n%s", code, out.String())
		}
		if r := cli(t, a.dir, "spire-agent", "healthcheck", "-socketPath", a.socket); r.code != 0 {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
}

// svidWatch checks the workload's X509-SVID every 100 ms and keeps the
// first moment it had none that was valid, and when each SVID was first
// seen (the SVIDs live 20 s, so the agent must keep rotating them
// through the kill and the database outage).
type svidWatch struct {
	mu    sync.Mutex
	bad   string
	seen  int
	first map[string]time.Time // serial -> first seen
}

// rotatedBetween says whether an SVID was first seen between from and to.
func (w *svidWatch) rotatedBetween(from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, at := range w.first {
		if at.After(from) && at.Before(to) {
			return true
		}
	}
	return false
}

func (w *svidWatch) run(ctx context.Context, src *workloadapi.X509Source) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		svid, err := src.GetX509SVID()
		now := time.Now()
		w.mu.Lock()
		w.seen++
		switch {
		case w.bad != "":
		case err != nil:
			w.bad = fmt.Sprintf("%s: %v", now.Format(time.StampMilli), err)
		case !now.Before(svid.Certificates[0].NotAfter):
			w.bad = fmt.Sprintf("%s: SVID expired at %s", now.Format(time.StampMilli), svid.Certificates[0].NotAfter)
		default:
			if serial := svid.Certificates[0].SerialNumber.String(); w.first[serial].IsZero() {
				w.first[serial] = now
			}
		}
		w.mu.Unlock()
	}
}

func (w *svidWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bad != "" {
		t.Fatalf("the workload had no valid X509-SVID at %s", w.bad)
	}
	if w.seen == 0 {
		t.Fatal("the workload's SVID was never looked at")
	}
}

// createEntry creates one entry through conn and returns its ID, or the
// code it was refused with.
func createEntry(ctx context.Context, conn *grpc.ClientConn, path string) (string, codes.Code) {
	resp, err := entryv1.NewEntryClient(conn).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
		SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: path},
		ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: "/failover/nobody"},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:4242"}},
	}}})
	if err != nil {
		return "", status.Code(err)
	}
	r := resp.Results[0]
	if c := codes.Code(r.Status.GetCode()); c != codes.OK {
		return "", c
	}
	return r.Entry.GetId(), codes.OK
}

// fleetSize is the number of simulated agents of the failover test.
const fleetSize = 300

// TestFailoverThreeServersPostgres (issue 14, failover): three real
// servers on one PostgreSQL behind one name (127.0.0.2-4 in the agent's
// /etc/hosts), 300 simulated agents balancing over the three, one real
// agent with a go-spiffe workload whose SVIDs live 20 s, and a writer
// creating entries through all three servers.
//
//   - kill -9 of one server under that load: the workload never lacks a
//     valid SVID, every simulated agent has synced again within 10 s,
//     and the real agent fetches an entry created afterwards through a
//     survivor without attesting again (its join token could not be used
//     twice);
//   - the killed server, restarted, serves again: an agent of its own is
//     served the entry created while it was down, and then one created
//     through another server;
//   - the database killed (kill -9) and away for 30 s: agents keep
//     syncing from the servers' caches, the workload is given a new SVID
//     meanwhile, a write is refused with Unavailable, and once the
//     database is back writes succeed again through every server;
//   - every entry a server acknowledged is in the database at the end,
//     after both kills.
func TestFailoverThreeServersPostgres(t *testing.T) {
	testFailover(t, failoverDB{databaseType: "postgres", driver: "pgx", countQuery: `SELECT COUNT(*) FROM registered_entries WHERE id = $1`,
		start: func(t *testing.T) dbInstance { return postgres.StartInstance(t) }})
}

// TestFailoverThreeServersMariaDB is TestFailoverThreeServersPostgres on
// MariaDB (database_type "mysql").
func TestFailoverThreeServersMariaDB(t *testing.T) {
	testFailover(t, failoverDB{databaseType: "mysql", driver: "mysql", countQuery: `SELECT COUNT(*) FROM registered_entries WHERE id = ?`,
		start: func(t *testing.T) dbInstance { return mariadb.StartInstance(t) }})
}

// dbInstance is a database server of the test's own that it can kill and
// start again (sim/postgres's and sim/mariadb's Instance).
type dbInstance interface {
	DSN() string
	Kill()
	Start() error
}

// failoverDB is what differs between the engines of the failover test.
type failoverDB struct {
	databaseType, driver string
	// countQuery counts the entries of one ID, in the engine's
	// placeholder syntax.
	countQuery string
	start      func(t *testing.T) dbInstance
}

func testFailover(t *testing.T, engine failoverDB) {
	if os.Geteuid() != 0 {
		simtest.Skip(t, "failover: a mount namespace for the agent's /etc/hosts needs root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		simtest.Skip(t, "failover: unshare not found")
	}
	inst := engine.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	port := freePort(t)
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	servers := make([]*serverEnv, len(ips))
	admins := make([]*grpc.ClientConn, len(ips))
	var addrs []string
	hosts := "127.0.0.1 localhost\n"
	for i, ip := range ips {
		servers[i] = startServerAt(t, engine.databaseType, inst.DSN(), ip, port)
		admins[i] = servers[i].admin(t)
		addrs = append(addrs, fmt.Sprintf("%s:%d", ip, port))
		hosts += ip + " " + failoverName + "\n"
	}
	bundle := sharedBundle(t, servers[2], len(servers))

	// The real agent, attested through whichever server the name gives.
	a := newAgent(t, servers[2], agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor("")})
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), `server_address = "127.0.0.1"`, fmt.Sprintf("server_address = %q", failoverName), 1))
	hostsFile := filepath.Join(a.dir, "hosts")
	if err := os.WriteFile(a.conf, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostsFile, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	token := servers[0].token(t, "")
	agentID := "spiffe://example.org/spire/agent/join_token/" + token
	servers[1].createEntry(t, "-parentID", agentID, "-spiffeID", "spiffe://example.org/failover/workload",
		"-selector", "unix:uid:0", "-x509SVIDTTL", "20")
	startAgentWithHosts(t, a, hostsFile, token)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(a.addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	watch := &svidWatch{first: map[string]time.Time{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watch.run(watchCtx, src)

	// The fleet: each simulated agent attested through one server, an
	// entry each so that its syncs sign, then balancing over all three.
	fl := fleet.New(fleet.Server{Addrs: addrs, Bundle: bundle}, 2*time.Second)
	defer fl.Close()
	var entries []*types.Entry
	for j := range fleetSize {
		tok, err := agentv1.NewAgentClient(admins[j%3]).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
		if err != nil {
			t.Fatal(err)
		}
		id, err := fl.Add(ctx, tok.Value)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, &types.Entry{
			SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/fleet/%d", j)},
			ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: id.Path()},
			Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}},
		})
	}
	resp, err := entryv1.NewEntryClient(admins[0]).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Results {
		if codes.Code(r.Status.GetCode()) != codes.OK {
			t.Fatalf("create fleet entry: %s", r.Status.GetMessage())
		}
	}
	eventually(t, 60*time.Second, "an SVID for every simulated agent", func() error {
		if n := fl.Held(); n < fleetSize {
			return fmt.Errorf("%d SVIDs of %d", n, fleetSize)
		}
		return nil
	})

	// A writer through all three servers, keeping what was acknowledged.
	var (
		ackMu sync.Mutex
		acked []string
	)
	writeCtx, stopWrites := context.WithCancel(ctx)
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 0; writeCtx.Err() == nil; i++ {
			wctx, wcancel := context.WithTimeout(writeCtx, 10*time.Second)
			id, code := createEntry(wctx, admins[i%3], fmt.Sprintf("/failover/write/%d", i))
			wcancel()
			if code == codes.OK {
				ackMu.Lock()
				acked = append(acked, id)
				ackMu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	time.Sleep(2 * time.Second)

	// An agent of the test's own, to ask the killed server once it is
	// back what its caches hold.
	probe := attestThrough(t, ctx, servers[1], bundle)

	// kill -9 one server (the one that made the real agent's token).
	killed := servers[0]
	if err := syscall.Kill(killed.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-killed.proc.Done()
	killedAt := time.Now()
	eventually(t, 10*time.Second, "every simulated agent syncing again after the kill", func() error {
		if n, total := fl.SyncedSince(killedAt); n < total {
			return fmt.Errorf("%d of %d synced since the kill", n, total)
		}
		return nil
	})
	t.Logf("every simulated agent synced again %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	servers[1].createEntry(t, "-parentID", agentID, "-spiffeID", "spiffe://example.org/failover/after-kill", "-selector", "unix:uid:0")
	servers[2].createEntry(t, "-parentID", probe.ID.String(), "-spiffeID", "spiffe://example.org/failover/while-down", "-selector", "unix:uid:0")
	eventually(t, 10*time.Second, "the entry created after the kill at the workload", func() error {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		defer fcancel()
		svids, err := workloadapi.FetchX509SVIDs(fctx, workloadapi.WithAddr(a.addr()))
		if err != nil {
			return err
		}
		for _, s := range svids {
			if s.ID.Path() == "/failover/after-kill" {
				return nil
			}
		}
		return fmt.Errorf("%d SVIDs, not the new one", len(svids))
	})
	stopWrites()
	writer.Wait()
	out := a.proc.out.String()
	if n := strings.Count(out, "Node attestation succeeded"); n != 1 {
		t.Errorf("the agent attested %d times; want once", n)
	}
	if !strings.Contains(out, "Lost connection to server") {
		t.Error("the agent did not log the lost server")
	}

	// The killed server, restarted on its journal, serves again: its
	// caches hold what was written while it was down (an agent of its
	// own is served the entry created meanwhile), and follow the events
	// from then on (and the next one, written through another server).
	killed.start(t)
	if !strings.Contains(killed.cli(t, "entry", "show", "-spiffeID", "spiffe://example.org/failover/after-kill"), "after-kill") {
		t.Fatal("the restarted server does not show the entry created while it was down")
	}
	admins[0] = killed.admin(t)
	probeConn := agentConn(t, killed, bundle, probe)
	servedByKilled := func(path string) func() error {
		return func() error {
			ids, err := syncEntries(ctx, probeConn)
			if err != nil {
				return err
			}
			if !slices.Contains(ids, path) {
				return fmt.Errorf("entries %v", ids)
			}
			return nil
		}
	}
	if err := servedByKilled("/failover/while-down")(); err != nil {
		t.Fatalf("the restarted server's caches miss the entry created while it was down: %v", err)
	}
	servers[1].createEntry(t, "-parentID", probe.ID.String(), "-spiffeID", "spiffe://example.org/failover/after-restart", "-selector", "unix:uid:0")
	within(t, time.Now(), "an entry created through another server, served by the restarted one", servedByKilled("/failover/after-restart"))

	// The database killed (kill -9: connections cut, crash recovery at
	// its start) and away for 30 s.
	inst.Kill()
	downAt := time.Now()
	time.Sleep(3 * time.Second)
	for i, admin := range admins {
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		_, code := createEntry(wctx, admin, fmt.Sprintf("/failover/down/%d", i))
		wcancel()
		if code != codes.Unavailable {
			t.Errorf("a write through server %d with the database down: %v, want Unavailable", i, code)
		}
	}
	time.Sleep(time.Until(downAt.Add(30 * time.Second)))
	if !watch.rotatedBetween(downAt, time.Now()) {
		t.Error("the workload got no new SVID while the database was down (they live 20 s)")
	}
	if n, total := fl.SyncedSince(downAt.Add(5 * time.Second)); n < total {
		t.Errorf("with the database down, %d of %d simulated agents synced after its first 5 s", n, total)
	}
	if err := inst.Start(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	for i, admin := range admins {
		eventually(t, 30*time.Second, fmt.Sprintf("a write through server %d with the database back", i), func() error {
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			defer wcancel()
			if _, code := createEntry(wctx, admin, fmt.Sprintf("/failover/up/%d/%d", i, time.Now().UnixNano())); code != codes.OK {
				return fmt.Errorf("code %v", code)
			}
			return nil
		})
	}
	t.Logf("writes through every server %v after the database came back", time.Since(upAt).Round(time.Millisecond))
	eventually(t, 15*time.Second, "every simulated agent syncing with the database back", func() error {
		if n, total := fl.SyncedSince(upAt); n < total {
			return fmt.Errorf("%d of %d", n, total)
		}
		return nil
	})
	// Every write acknowledged before the server's kill is there, the
	// database's kill and recovery since included.
	db, err := sql.Open(engine.driver, inst.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ackMu.Lock()
	for _, id := range acked {
		var n int
		if err := db.QueryRowContext(ctx, engine.countQuery, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("acknowledged entry %s is not in the database", id)
		}
	}
	t.Logf("%d acknowledged writes, all in the database", len(acked))
	if len(acked) == 0 {
		t.Error("no write was acknowledged")
	}
	ackMu.Unlock()
	stopWatch()
	watch.check(t)
}
