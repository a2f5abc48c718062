package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var uidSelector = "unix:uid:" + strconv.Itoa(os.Getuid())

func newClient(t *testing.T, a *agentEnv) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fetchX509 retries until the agent has an SVID for this process (the
// first sync may still be in flight).
func fetchX509(t *testing.T, c *workloadapi.Client, want string) *workloadapi.X509Context {
	t.Helper()
	var got *workloadapi.X509Context
	eventually(t, 20*time.Second, "an X.509-SVID for "+want, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		x, err := c.FetchX509Context(ctx)
		if err != nil {
			return err
		}
		for _, s := range x.SVIDs {
			if s.ID.String() == want {
				got = x
				return nil
			}
		}
		return errString("SVID not there yet")
	})
	return got
}

func selfSHA256(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestWorkloadGetsIdentity: an unmodified go-spiffe client fetches
// X.509- and JWT-SVIDs from our agent, and they verify against the bundles
// the same client fetched.
func TestWorkloadGetsIdentity(t *testing.T) {
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/workload",
		"-selector", uidSelector, "-selector", "unix:sha256:"+selfSHA256(t), "-dns", "workload.example.org")
	// An entry whose selectors this process does not have is not issued.
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/other", "-selector", "unix:uid:54321")
	a := startAgent(t, s, token)
	c := newClient(t, a)

	x := fetchX509(t, c, "spiffe://example.org/workload")
	if len(x.SVIDs) != 1 {
		t.Fatalf("got %d SVIDs, want only the matching one", len(x.SVIDs))
	}
	svid := x.SVIDs[0]
	if _, _, err := x509svid.Verify(svid.Certificates, x.Bundles); err != nil {
		t.Fatalf("SVID does not verify against the fetched bundle: %v", err)
	}
	if dns := svid.Certificates[0].DNSNames; len(dns) != 1 || dns[0] != "workload.example.org" {
		t.Fatalf("DNS names %v", dns)
	}

	ctx := context.Background()
	jwt, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if jwt.ID.String() != "spiffe://example.org/workload" {
		t.Fatalf("JWT-SVID for %s", jwt.ID)
	}
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), bundles, []string{"db"}); err != nil {
		t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, jwt.Marshal(), "db"); err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, jwt.Marshal(), "other-audience"); err == nil {
		t.Fatal("ValidateJWTSVID accepted a token for another audience")
	}

	// The agent CLI is another binary: the sha256 selector keeps the
	// workload's SVID from it.
	r := cli(t, a.dir, "spire-agent", "api", "fetch", "x509", "-socketPath", a.socket)
	if r.code == 0 || !strings.Contains(r.stderr, "no identity issued") {
		t.Fatalf("a binary with another hash got: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

type watcher struct {
	updates chan *workloadapi.X509Context
	errs    chan error
}

func (w *watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	select {
	case w.updates <- x:
	default:
	}
}

func (w *watcher) OnX509ContextWatchError(err error) {
	select {
	case w.errs <- err:
	default:
	}
}

// TestRotationAndDeletionOnStream: with a short TTL, new SVIDs arrive on
// the open stream; deleting the entry takes the SVID away. The CA backdates
// NotBefore by 10 s for clock skew, so a 20 s TTL gives a 30 s lifetime
// whose half is 5 s after issue: about one rotation every 5 s.
func TestRotationAndDeletionOnStream(t *testing.T) {
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	entryID := s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/short",
		"-selector", uidSelector, "-x509SVIDTTL", "20")
	a := startAgent(t, s, token)
	c := newClient(t, a)
	fetchX509(t, c, "spiffe://example.org/short")

	w := &watcher{updates: make(chan *workloadapi.X509Context, 64), errs: make(chan error, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.WatchX509Context(ctx, w)

	serials := map[string]bool{}
	started := time.Now()
	deadline := time.After(40 * time.Second)
	for len(serials) < 3 {
		select {
		case x := <-w.updates:
			for _, s := range x.SVIDs {
				serials[s.Certificates[0].SerialNumber.String()] = true
			}
		case err := <-w.errs:
			t.Logf("watch error (retried by go-spiffe): %v", err)
		case <-deadline:
			t.Fatalf("saw %d distinct SVIDs on the stream in 40s; want rotations", len(serials))
		}
	}
	// Rotation at half-life, not churn on every sync.
	if took := time.Since(started); took < 6*time.Second {
		t.Fatalf("three SVIDs within %v: the agent re-issues far before half-life", took)
	}

	s.cli(t, "entry", "delete", "-entryID", entryID)
	deadline = time.After(20 * time.Second)
	for {
		select {
		case x := <-w.updates:
			if len(x.SVIDs) == 0 {
				return
			}
		case err := <-w.errs:
			if status.Code(errors.Unwrap(err)) == codes.PermissionDenied || status.Code(err) == codes.PermissionDenied || strings.Contains(err.Error(), "no identity issued") {
				return // the SVID is gone: the agent says no identity is issued
			}
		case <-deadline:
			t.Fatal("the SVID stayed on the stream after its entry was deleted")
		}
	}
}

// TestAgentServesWhileServerDown: an agent restarted while the server is
// unreachable serves its cached SVIDs at once, and catches up when the
// server returns.
func TestAgentServesWhileServerDown(t *testing.T) {
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/cached", "-selector", uidSelector)
	a := startAgent(t, s, token)
	first := fetchX509(t, newClient(t, a), "spiffe://example.org/cached")

	s.proc.Stop()
	a.proc.Stop()
	a.start(t, "") // no join token: the persisted agent SVID is reused
	c := newClient(t, a)
	x := fetchX509(t, c, "spiffe://example.org/cached")
	if _, _, err := x509svid.Verify(x.SVIDs[0].Certificates, x.Bundles); err != nil {
		t.Fatalf("cached SVID does not verify: %v", err)
	}
	if x.SVIDs[0].Certificates[0].SerialNumber.Cmp(first.SVIDs[0].Certificates[0].SerialNumber) != 0 {
		t.Fatal("the offline agent served a different SVID than it had cached")
	}

	s.start(t)
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/after-outage", "-selector", uidSelector)
	fetchX509(t, c, "spiffe://example.org/after-outage")

	// The agent CLI, a workload with the same uid, gets both.
	out := mustCLI(t, a.dir, "spire-agent", "api", "fetch", "x509", "-socketPath", a.socket)
	if !strings.Contains(out, "spiffe://example.org/cached") || !strings.Contains(out, "spiffe://example.org/after-outage") {
		t.Fatalf("api fetch x509:\n%s", out)
	}
}

// TestAgentIsolation: a workload on agent A never receives SVIDs of
// entries that belong to agent B.
func TestAgentIsolation(t *testing.T) {
	s := startServer(t, "")
	tokA, tokB := s.token(t, "spiffe://example.org/node-a"), s.token(t, "spiffe://example.org/node-b")
	s.createEntry(t, "-parentID", "spiffe://example.org/node-a", "-spiffeID", "spiffe://example.org/on-a", "-selector", uidSelector)
	s.createEntry(t, "-parentID", "spiffe://example.org/node-b", "-spiffeID", "spiffe://example.org/on-b", "-selector", uidSelector)
	a, b := startAgent(t, s, tokA), startAgent(t, s, tokB)
	xa := fetchX509(t, newClient(t, a), "spiffe://example.org/on-a")
	xb := fetchX509(t, newClient(t, b), "spiffe://example.org/on-b")
	for name, x := range map[string]*workloadapi.X509Context{"agent A": xa, "agent B": xb} {
		if len(x.SVIDs) != 1 {
			ids := []string{}
			for _, s := range x.SVIDs {
				ids = append(ids, s.ID.String())
			}
			t.Fatalf("%s served %v; want only its own entry", name, ids)
		}
	}
}

// idRecorder is a go-spiffe X.509 watcher that remembers every SPIFFE ID
// it was ever sent, so that a test can tell that one never came.
type idRecorder struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newIDRecorder() *idRecorder { return &idRecorder{seen: map[string]bool{}} }

func (r *idRecorder) OnX509ContextUpdate(x *workloadapi.X509Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range x.SVIDs {
		r.seen[s.ID.String()] = true
	}
}

// OnX509ContextWatchError: go-spiffe retries by itself; once the agent has
// stopped, every retry fails, which is expected here.
func (r *idRecorder) OnX509ContextWatchError(error) {}

func (r *idRecorder) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[id]
}

// TestBannedAgentStopsSyncing: once banned, the agent gets nothing new and
// stops. Two agents share the node alias, so an entry created after the
// ban is authorized for both: the control agent's workload receives it,
// which shows it reached the agents' sync, and the banned agent's workload
// never does, however long it watches.
func TestBannedAgentStopsSyncing(t *testing.T) {
	const syncInterval = 500 * time.Millisecond // agentConfig's sync_interval
	s := startServer(t, "")
	token, controlToken := s.token(t, "spiffe://example.org/node"), s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/before-ban", "-selector", uidSelector)
	a, control := startAgent(t, s, token), startAgent(t, s, controlToken)
	c := newClient(t, a)
	fetchX509(t, c, "spiffe://example.org/before-ban")
	fetchX509(t, newClient(t, control), "spiffe://example.org/before-ban")

	// The watches are open before the ban, so that anything either agent
	// serves afterwards is recorded.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	banned, unbanned := newIDRecorder(), newIDRecorder()
	go c.WatchX509Context(ctx, banned)
	go newClient(t, control).WatchX509Context(ctx, unbanned)
	eventually(t, 20*time.Second, "both watches to receive their first update", func() error {
		if !banned.has("spiffe://example.org/before-ban") || !unbanned.has("spiffe://example.org/before-ban") {
			return errString("no update yet")
		}
		return nil
	})

	agentID := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("example.org"), "/spire/agent/join_token/"+token)
	if out := s.cli(t, "agent", "list"); !strings.Contains(out, "Found 2 attested agents:") || !strings.Contains(out, agentID.String()) {
		t.Fatalf("agent list:\n%s", out)
	}
	if out := s.cli(t, "agent", "list", "-attestationType", "tpm"); !strings.Contains(out, "No attested agents found") {
		t.Fatalf("agent list filtered by another attestation type:\n%s", out)
	}
	if out := s.cli(t, "agent", "show", "-spiffeID", agentID.String()); !strings.Contains(out, "Attestation type  : join_token") {
		t.Fatalf("agent show:\n%s", out)
	}
	if out := s.cli(t, "agent", "ban", "-spiffeID", agentID.String()); !strings.Contains(out, "Agent banned successfully") {
		t.Fatalf("agent ban: %q", out)
	}
	banTime := time.Now()
	const afterBan = "spiffe://example.org/after-ban"
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", afterBan, "-selector", uidSelector)
	eventually(t, 20*time.Second, "the control agent's workload to receive the entry created after the ban", func() error {
		if !unbanned.has(afterBan) {
			return errString("not yet")
		}
		return nil
	})
	eventually(t, 20*time.Second, "the banned agent to stop", func() error {
		if done, _ := a.proc.exited(); done {
			return nil
		}
		return errString("still running")
	})
	// Several sync intervals past the ban, and past the control's
	// delivery, before the banned side is judged.
	time.Sleep(max(time.Until(banTime.Add(6*syncInterval)), 2*syncInterval))
	if banned.has(afterBan) {
		t.Fatalf("the banned agent served %s, an entry created after its ban", afterBan)
	}
	if !strings.Contains(a.proc.out.String(), "evicted") && !strings.Contains(a.proc.out.String(), "banned") {
		t.Fatalf("agent stopped without saying why:\n%s", a.proc.out.String())
	}
	if done, _ := control.proc.exited(); done {
		t.Fatalf("the control agent stopped too:\n%s", control.proc.out.String())
	}
	if out := s.cli(t, "agent", "list", "-banned", "true"); !strings.Contains(out, agentID.String()) {
		t.Fatalf("agent list -banned true:\n%s", out)
	}
	if out := s.cli(t, "agent", "evict", "-spiffeID", agentID.String()); !strings.Contains(out, "Agent evicted successfully") {
		t.Fatalf("agent evict: %q", out)
	}
	if out := s.cli(t, "agent", "count"); !strings.Contains(out, "1 attested agent") {
		t.Fatalf("agent count after evict: %q", out)
	}
}
