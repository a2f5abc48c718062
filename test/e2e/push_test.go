package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// pushBound is how soon a pushed change must be at the workload: far
// below the 5 s poll these agents run with, with slack for a loaded
// machine (the benchmark bench/push reports the real figures).
const pushBound = 2 * time.Second

// latestX509 keeps the newest X.509 context of a watch and signals each.
type latestX509 struct {
	mu      sync.Mutex
	x       *workloadapi.X509Context
	updated chan struct{}
}

func (l *latestX509) OnX509ContextUpdate(x *workloadapi.X509Context) {
	l.mu.Lock()
	l.x = x
	l.mu.Unlock()
	select {
	case l.updated <- struct{}{}:
	default:
	}
}

func (l *latestX509) OnX509ContextWatchError(error) {}

// waitFor waits until cond holds for the newest context, and returns
// how long it took.
func (l *latestX509) waitFor(t *testing.T, what string, within time.Duration, cond func(*workloadapi.X509Context) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		x := l.x
		l.mu.Unlock()
		if x != nil && cond(x) {
			return time.Since(start)
		}
		select {
		case <-l.updated:
		case <-deadline.C:
			t.Fatalf("%s: not at the workload within %v", what, within)
		}
	}
}

func hasSVID(x *workloadapi.X509Context, id string) bool {
	for _, s := range x.SVIDs {
		if s.ID.String() == id {
			return true
		}
	}
	return false
}

func ownAuthorities(x *workloadapi.X509Context) int {
	b, err := x.Bundles.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		return 0
	}
	return len(b.X509Authorities())
}

// TestPushedChanges: our server pushes change notices to our agent, which
// syncs at once; with a 5 s poll, an entry created, an entry deleted and
// a prepared authority are at the workload in well under a poll, and a
// ban stops the agent as fast.
func TestPushedChanges(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/push-base", "-selector", uidSelector)
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor(`
            discover_workload_path = true
        `)})
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.conf, []byte(strings.Replace(string(conf), `sync_interval = "500ms"`, `sync_interval = "5s"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, token)
	c := newClient(t, a)
	fetchX509(t, c, "spiffe://example.org/push-base")
	eventually(t, 20*time.Second, "the agent's notice stream", func() error {
		if !strings.Contains(a.proc.out.String(), "Server pushes change notices") {
			return errString("not subscribed yet")
		}
		return nil
	})

	w := &latestX509{updated: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.WatchX509Context(ctx, w) }()
	w.waitFor(t, "the first update", 20*time.Second, func(x *workloadapi.X509Context) bool { return hasSVID(x, "spiffe://example.org/push-base") })

	const pushed = "spiffe://example.org/pushed"
	start := time.Now()
	id := s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", pushed, "-selector", uidSelector)
	w.waitFor(t, "a created entry", pushBound-time.Since(start), func(x *workloadapi.X509Context) bool { return hasSVID(x, pushed) })
	t.Logf("created entry at the workload %v after the CLI started", time.Since(start))

	start = time.Now()
	s.cli(t, "entry", "delete", "-entryID", id)
	w.waitFor(t, "a deleted entry", pushBound-time.Since(start), func(x *workloadapi.X509Context) bool { return !hasSVID(x, pushed) })
	t.Logf("deleted entry gone from the workload %v after the CLI started", time.Since(start))

	before := ownAuthorities(w.x)
	start = time.Now()
	s.cli(t, "localauthority", "x509", "prepare")
	cliTook := time.Since(start)
	w.waitFor(t, "a prepared X.509 authority", pushBound-time.Since(start), func(x *workloadapi.X509Context) bool { return ownAuthorities(x) > before })
	t.Logf("prepared authority in the workload's bundle %v after the CLI started (the CLI took %v)", time.Since(start), cliTook)

	agentID := "spiffe://example.org/spire/agent/join_token/" + token
	start = time.Now()
	if out := s.cli(t, "agent", "ban", "-spiffeID", agentID); !strings.Contains(out, "Agent banned successfully") {
		t.Fatalf("agent ban: %q", out)
	}
	eventually(t, pushBound-time.Since(start), "the banned agent to stop", func() error {
		if done, _ := a.proc.exited(); done {
			return nil
		}
		return errString("still running")
	})
	t.Logf("banned agent stopped %v after the CLI started", time.Since(start))
}

// pushAgent runs a join-token agent with token that polls once an hour,
// so that whatever reaches it sooner was pushed, with Prometheus on to
// count its syncs.
func pushAgent(t *testing.T, s *serverEnv, token string) *agentEnv {
	t.Helper()
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor(""), telemetry: true})
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.conf, []byte(strings.Replace(string(conf), `sync_interval = "500ms"`, `sync_interval = "1h"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, token)
	eventually(t, 20*time.Second, "the agent's notice stream", func() error {
		if !strings.Contains(a.proc.out.String(), "Server pushes change notices") {
			return errString("not subscribed yet")
		}
		return nil
	})
	return a
}

// syncs is how many syncs the agent has made (SPIRE's
// manager.sync.fetch_entries_updates calls that succeeded).
func syncs(t *testing.T, a *agentEnv) float64 {
	t.Helper()
	const name = "spire_agent_manager_sync_fetch_entries_updates{"
	n := 0.0
	for _, line := range strings.Split(scrape(t, a.metricsPort), "\n") {
		if strings.HasPrefix(line, name) && strings.Contains(line, `status="OK"`) {
			f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			n += f
		}
	}
	return n
}

// settledSyncs waits until the agent's syncs stop (those of its start and
// of its stream's Open) and returns their count.
func settledSyncs(t *testing.T, a *agentEnv) float64 {
	t.Helper()
	prev := -1.0
	var n float64
	eventually(t, 20*time.Second, "the agent's syncs to settle", func() error {
		n = syncs(t, a)
		if n == 0 || n != prev {
			prev = n
			time.Sleep(time.Second)
			return errString("still syncing")
		}
		return nil
	})
	return n
}

// td2Authorities fetches, as a workload of a, the X.509 authorities of
// td2.test.
func td2Authorities(t *testing.T, c *workloadapi.Client) []*x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	set, err := c.FetchX509Bundles(ctx)
	if err != nil {
		return nil
	}
	b, err := set.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("td2.test"))
	if err != nil {
		return nil
	}
	return b.X509Authorities()
}

// TestPushedFederatedBundle: with an hour's poll, a new bundle of td2.test
// set on the server is at the workload whose entry federates with td2.test
// within a push, and the agent whose entries federate with nothing does
// not sync because of it.
func TestPushedFederatedBundle(t *testing.T) {
	t.Parallel()
	s := startServer(t, "")
	setTD2 := func(name string) *x509.Certificate {
		ca := wltest.NewCA(t, spiffeid.RequireTrustDomainFromString("td2.test"))
		path := filepath.Join(s.dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		s.cli(t, "bundle", "set", "-id", "spiffe://td2.test", "-path", path)
		return ca.Cert
	}
	first := setTD2("td2-1.pem")
	fedToken, plainToken := s.token(t, "spiffe://example.org/node-fed"), s.token(t, "spiffe://example.org/node-plain")
	s.createEntry(t, "-parentID", "spiffe://example.org/node-fed", "-spiffeID", "spiffe://example.org/fed", "-selector", uidSelector, "-federatesWith", "spiffe://td2.test")
	s.createEntry(t, "-parentID", "spiffe://example.org/node-plain", "-spiffeID", "spiffe://example.org/plain", "-selector", uidSelector)
	fed, plain := pushAgent(t, s, fedToken), pushAgent(t, s, plainToken)
	c := newClient(t, fed)
	fetchX509(t, c, "spiffe://example.org/fed")
	fetchX509(t, newClient(t, plain), "spiffe://example.org/plain")
	eventually(t, 20*time.Second, "td2.test's first bundle at the workload", func() error {
		if got := td2Authorities(t, c); len(got) != 1 || !got[0].Equal(first) {
			return errString("not yet")
		}
		return nil
	})
	fedBefore, plainBefore := settledSyncs(t, fed), settledSyncs(t, plain)

	start := time.Now()
	second := setTD2("td2-2.pem")
	cliTook := time.Since(start)
	eventually(t, pushBound-time.Since(start), "td2.test's new bundle at the workload", func() error {
		if got := td2Authorities(t, c); len(got) != 1 || !got[0].Equal(second) {
			return errString("not yet")
		}
		return nil
	})
	t.Logf("new td2.test bundle at the workload %v after the CLI started (the CLI took %v)", time.Since(start), cliTook)

	// Past the feed's look (1 s) and the agents' debounce: the notice went
	// to the federating agent only.
	time.Sleep(2 * time.Second)
	if n := syncs(t, fed); n <= fedBefore {
		t.Errorf("federating agent: %v syncs, %v before the change: the new bundle came without one?", n, fedBefore)
	}
	if n := syncs(t, plain); n != plainBefore {
		t.Errorf("agent without federating entries synced %v times for a bundle it does not use", n-plainBefore)
	}
}

// TestPushOffOnServer: a server with change_notices = false does not offer
// notices; our agent logs it once and polls, and still gets its entries.
func TestPushOffOnServer(t *testing.T) {
	t.Parallel()
	s := startServer(t, "change_notices = false")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/polled", "-selector", uidSelector)
	a := startAgent(t, s, token)
	fetchX509(t, newClient(t, a), "spiffe://example.org/polled")
	eventually(t, 20*time.Second, "the agent to find notices off", func() error {
		if !strings.Contains(a.proc.out.String(), "Server does not offer change notices; polling every sync interval") {
			return errString("no log line yet")
		}
		return nil
	})
	if strings.Contains(a.proc.out.String(), "Server pushes change notices") {
		t.Fatal("the agent subscribed to a server with change notices off")
	}
}
