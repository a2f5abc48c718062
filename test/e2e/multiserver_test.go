package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/sim/fleet"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

// startSharedServer runs a join-token server of example.org whose
// datastore is the PostgreSQL database dsn, shared with other servers;
// its CA key is its own (a disk key manager in its own directory).
func startSharedServer(t *testing.T, dsn string) *serverEnv {
	t.Helper()
	return startSharedServerOn(t, "postgres", dsn)
}

// startSharedServerOn is startSharedServer on a database of databaseType
// ("postgres" or "mysql").
func startSharedServerOn(t *testing.T, databaseType, dsn string) *serverEnv {
	t.Helper()
	dir := shortTempDir(t)
	s := &serverEnv{dir: dir, socket: filepath.Join(dir, "server.sock"), conf: filepath.Join(dir, "server.conf"), port: freePort(t)}
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = "example.org"
    data_dir = %q
    log_level = "DEBUG"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = %q
            connection_string = %q
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = %q
        }
    }
    %s
}
`, s.port, s.socket, filepath.Join(dir, "data"), databaseType, dsn, filepath.Join(dir, "data/keys.json"), joinTokenAttestor)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// sharedBundle waits until the trust bundle s serves holds want X.509
// authorities (every server's CA) and returns it.
func sharedBundle(t *testing.T, s *serverEnv, want int) *x509bundle.Bundle {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	var b *x509bundle.Bundle
	eventually(t, 20*time.Second, fmt.Sprintf("a bundle with %d X.509 authorities", want), func() error {
		out := []byte(s.cli(t, "bundle", "show"))
		b = x509bundle.New(td)
		for {
			var blk *pem.Block
			if blk, out = pem.Decode(out); blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return err
			}
			b.AddX509Authority(c)
		}
		if n := len(b.X509Authorities()); n < want {
			return fmt.Errorf("%d authorities", n)
		}
		return nil
	})
	return b
}

// agentConn is an mTLS connection to a server's agent API, presenting
// svid (none when nil), made ready before it is returned so that a race
// between calls is not a race between handshakes. It is closed when the
// test ends, or earlier by the caller: the server caps connections per
// agent, and the test makes a few per round.
func agentConn(t *testing.T, s *serverEnv, bundle *x509bundle.Bundle, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	serverID := spiffeid.RequireFromPath(bundle.TrustDomain(), "/spire/server")
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(serverID))
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID))
	}
	ip := s.ip
	if ip == "" {
		ip = "127.0.0.1"
	}
	conn, err := grpc.NewClient(fmt.Sprintf("%s:%d", ip, s.port), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			t.Fatalf("connection to %d not ready: %v", s.port, st)
		}
	}
	return conn
}

// raceAgent is one agent's identity, driven by the test over the server
// API so that it can call two servers at the same moment.
type raceAgent struct {
	key *ecdsa.PrivateKey
	csr []byte
}

// renew calls RenewAgent over conn and returns the new SVID.
func (a *raceAgent) renew(ctx context.Context, conn *grpc.ClientConn, bundle *x509bundle.Bundle) (*x509svid.SVID, error) {
	resp, err := agentv1.NewAgentClient(conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: a.csr}})
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for _, der := range resp.Svid.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, bundle)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: a.key}, nil
}

// syncEntries fetches the agent's authorized entries over conn, which any
// agent-authenticated call does first: it activates a pending SVID.
func syncEntries(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	resp, err := entryv1.NewEntryClient(conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range resp.Entries {
		ids = append(ids, e.GetSpiffeId().GetPath())
	}
	return ids, nil
}

func serialOf(s *x509svid.SVID) string { return s.Certificates[0].SerialNumber.String() }

// TestTwoServersRenewSameAgent: two real servers on one PostgreSQL
// database, one agent, and the agent's calls reaching both at the same
// moment, in the two races a shared database must decide (issue 14):
//
//   - a renewal through each server with the same SVID: every call is
//     answered OK or Aborted, and the pending serial stored is one that
//     was handed out;
//   - the first use of a pending SVID (activation) through one server
//     while the other renews with the SVID it replaces: exactly one of the
//     two succeeds, never both (both meant a blind write that left the
//     agent holding an SVID the database no longer knows), and the stored
//     serials are the winner's.
//
// After every round the agent syncs through both servers with the SVID it
// kept.
func TestTwoServersRenewSameAgent(t *testing.T) {
	dsn := postgres.Start(t)
	srvA := startSharedServer(t, dsn)
	srvB := startSharedServer(t, dsn)
	bundle := sharedBundle(t, srvB, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ds, err := sqlstore.Open(ctx, sqlstore.Config{DatabaseType: sqlstore.Postgres, ConnectionString: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	agent := &raceAgent{key: key, csr: csr}
	cur, err := fleet.AttestJoinToken(ctx, agentConn(t, srvA, bundle, nil), bundle, srvA.token(t, ""), key, csr)
	if err != nil {
		t.Fatal(err)
	}
	agentID := cur.ID.String()
	srvA.createEntry(t, "-parentID", agentID, "-spiffeID", "spiffe://example.org/race/workload", "-selector", "unix:uid:0")
	nodeSerials := func() datastore.NodeSerials {
		t.Helper()
		n, err := ds.FetchAttestedNode(ctx, agentID)
		if err != nil {
			t.Fatal(err)
		}
		return n.Serials()
	}
	// syncBoth checks that the agent, holding svid, syncs through both
	// servers, and that the database then holds svid as current.
	syncBoth := func(round int, svid *x509svid.SVID) {
		t.Helper()
		for _, s := range []*serverEnv{srvA, srvB} {
			conn := agentConn(t, s, bundle, svid)
			ids, err := syncEntries(ctx, conn)
			conn.Close()
			if err != nil || len(ids) != 1 || ids[0] != "/race/workload" {
				t.Fatalf("round %d: sync through :%d with the kept SVID (serial %s): %v, %v; stored %+v",
					round, s.port, serialOf(svid), ids, err, nodeSerials())
			}
		}
		if got := nodeSerials(); got != (datastore.NodeSerials{CertSerial: serialOf(svid)}) {
			t.Fatalf("round %d: stored %+v after syncing with serial %s", round, got, serialOf(svid))
		}
	}
	// The entry was created through A: B serves it once its events
	// poller has read the entry's event.
	connB0 := agentConn(t, srvB, bundle, cur)
	within(t, time.Now(), "entry created through A served by B", func() error {
		ids, err := syncEntries(ctx, connB0)
		if err != nil || len(ids) != 1 {
			return fmt.Errorf("entries %v, %v", ids, err)
		}
		return nil
	})
	connB0.Close()
	syncBoth(0, cur)

	const rounds = 20
	var aborted, lostActivations int
	for round := 1; round <= rounds; round++ {
		// Race 1: a renewal through each server with the same SVID.
		connA, connB := agentConn(t, srvA, bundle, cur), agentConn(t, srvB, bundle, cur)
		var got [2]*x509svid.SVID
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, conn := range []*grpc.ClientConn{connA, connB} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got[i], errs[i] = agent.renew(ctx, conn, bundle)
			}()
		}
		close(start)
		wg.Wait()
		pending := nodeSerials()
		var kept *x509svid.SVID
		for i, err := range errs {
			switch {
			case err == nil && serialOf(got[i]) == pending.NewCertSerial:
				kept = got[i]
			case err == nil:
				// Both succeeded one after the other: the later
				// write's serial is the pending one.
			case status.Code(err) == codes.Aborted:
				aborted++
			default:
				t.Fatalf("round %d: renewal through server %d: %v, want OK or Aborted", round, i, err)
			}
		}
		if kept == nil || pending.CertSerial != serialOf(cur) {
			t.Fatalf("round %d: stored %+v is not the current serial %s with a pending one handed out (%v)", round, pending, serialOf(cur), errs)
		}

		// Race 2: server A sees the first use of the pending SVID
		// while server B renews with the SVID it replaces.
		connP := agentConn(t, srvA, bundle, kept)
		var renewed *x509svid.SVID
		var actErr, renewErr error
		start = make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, actErr = syncEntries(ctx, connP)
		}()
		go func() {
			defer wg.Done()
			<-start
			renewed, renewErr = agent.renew(ctx, connB, bundle)
		}()
		close(start)
		wg.Wait()
		after := nodeSerials()
		switch {
		case actErr == nil && renewErr == nil:
			t.Fatalf("round %d: activation of %s and a renewal with %s both succeeded; stored %+v: one of them was overwritten",
				round, serialOf(kept), serialOf(cur), after)
		case actErr == nil:
			if status.Code(renewErr) != codes.Aborted && status.Code(renewErr) != codes.PermissionDenied {
				t.Fatalf("round %d: renewal that lost to the activation: %v, want Aborted or PermissionDenied", round, renewErr)
			}
			if status.Code(renewErr) == codes.Aborted {
				aborted++
			}
			if after != (datastore.NodeSerials{CertSerial: serialOf(kept)}) {
				t.Fatalf("round %d: activation won but stored %+v, want %s current", round, after, serialOf(kept))
			}
			cur = kept
		case renewErr == nil:
			if status.Code(actErr) != codes.PermissionDenied && status.Code(actErr) != codes.Aborted {
				t.Fatalf("round %d: activation that lost to the renewal: %v, want PermissionDenied or Aborted", round, actErr)
			}
			lostActivations++
			if after != (datastore.NodeSerials{CertSerial: serialOf(cur), NewCertSerial: serialOf(renewed)}) {
				t.Fatalf("round %d: renewal won but stored %+v, want %s pending", round, after, serialOf(renewed))
			}
			cur = renewed
		default:
			t.Fatalf("round %d: both lost: activation %v, renewal %v; stored %+v", round, actErr, renewErr, after)
		}
		for _, c := range []*grpc.ClientConn{connA, connB, connP} {
			c.Close()
		}
		syncBoth(round, cur)
	}
	t.Logf("%d rounds: %d calls answered Aborted, %d activations lost to a renewal", rounds, aborted, lostActivations)
}
