package e2e

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

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
