package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
)

// delegateSocketEnv makes the test binary a one-shot Delegated Identity
// client of the admin socket it names: it asks FetchJWTSVIDs for a
// selector and prints the status ("OK", or code and message). It runs
// from init, before TestMain builds the binaries.
const delegateSocketEnv = "E2E_DELEGATE_SOCKET"

func init() {
	sock := os.Getenv(delegateSocketEnv)
	if sock == "" {
		return
	}
	fmt.Println(delegateCall(sock))
	os.Exit(0)
}

func delegateCall(sock string) string {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "dial: " + err.Error()
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = delegatedidentityv1.NewDelegatedIdentityClient(conn).FetchJWTSVIDs(ctx, &delegatedidentityv1.FetchJWTSVIDsRequest{
		Audience: []string{"db"}, Selectors: []*types.Selector{{Type: "k8s", Value: "ns:demo"}},
	})
	if err != nil {
		st := status.Convert(err)
		return st.Code().String() + " " + st.Message()
	}
	return "OK"
}

// exePath is the executable /proc shows for pid: what the unix attestor's
// path selector names.
func exePath(t *testing.T, pid int) string {
	t.Helper()
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestDelegatedIdentity: the real agent serves the Delegated Identity API
// on its admin socket. The test process, whose entry gives it an
// authorized_delegates ID, gets a sleeping process's X.509-SVID and
// JWT-SVID by that process's PID, another workload's by its selectors,
// and the bundles that verify them; the stream by PID ends when the
// process exits and its PID is refused after; a caller whose entry is not
// a delegate's, or who has none, gets PermissionDenied.
func TestDelegatedIdentity(t *testing.T) {
	s := startServer(t, "")
	const node = "spiffe://example.org/node"
	token := s.token(t, node)

	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	eventually(t, 10*time.Second, "the sleeper's exec", func() error {
		if filepath.Base(exePath(t, sleeper.Process.Pid)) != "sleep" {
			return errString("not yet")
		}
		return nil
	})
	self := exePath(t, os.Getpid())
	other := wltest.CopyForOthers(t, shortTempDir(t))
	s.createEntry(t, "-parentID", node, "-spiffeID", "spiffe://example.org/delegate", "-selector", "unix:path:"+self)
	s.createEntry(t, "-parentID", node, "-spiffeID", "spiffe://example.org/sleeper", "-selector", "unix:path:"+exePath(t, sleeper.Process.Pid))
	s.createEntry(t, "-parentID", node, "-spiffeID", "spiffe://example.org/by-selector", "-selector", "k8s:ns:demo")

	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor(`
            discover_workload_path = true
            workload_size_limit = -1
        `)})
	adminSocket := filepath.Join(shortTempDir(t), "private", "admin.sock")
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	socketLine := fmt.Sprintf("socket_path = %q\n", a.socket)
	text := strings.Replace(string(conf), socketLine, socketLine+fmt.Sprintf("    admin_socket_path = %q\n", adminSocket)+
		`    authorized_delegates = ["spiffe://example.org/delegate", "spiffe://example.org/absent"]`+"\n", 1)
	if !strings.Contains(text, "authorized_delegates") {
		t.Fatalf("agent.conf not as expected:\n%s", conf)
	}
	if err := os.WriteFile(a.conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, token)
	if strings.Contains(a.proc.out.String(), "authorized_delegates") {
		t.Fatalf("the agent warns about authorized_delegates:\n%s", a.proc.out.String())
	}

	client := delegatedidentityv1.NewDelegatedIdentityClient(dialUnix(t, adminSocket))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The bundles: the trust domain's X.509 and JWT authorities.
	xb, err := client.SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var bundleResp *delegatedidentityv1.SubscribeToX509BundlesResponse
	// The delegate's own entry may not have reached the agent yet.
	eventually(t, 30*time.Second, "the X.509 bundles", func() error {
		bundleResp, err = xb.Recv()
		if status.Code(err) == codes.PermissionDenied {
			if xb, err = client.SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{}); err != nil {
				t.Fatal(err)
			}
			return errString("not yet a delegate")
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
	td := spiffeid.RequireTrustDomainFromString("example.org")
	roots, err := x509.ParseCertificates(bundleResp.CaCertificates["spiffe://example.org"])
	if err != nil || len(roots) == 0 || len(bundleResp.CaCertificates) != 1 {
		t.Fatalf("X.509 bundles %v: %v", bundleResp.CaCertificates, err)
	}
	x509Bundle := x509bundle.FromX509Authorities(td, roots)
	jb, err := client.SubscribeToJWTBundles(ctx, &delegatedidentityv1.SubscribeToJWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jresp, err := jb.Recv()
	if err != nil {
		t.Fatal(err)
	}
	jwtBundle, err := jwtbundle.Parse(td, jresp.Bundles["spiffe://example.org"])
	if err != nil || len(jwtBundle.JWTAuthorities()) == 0 {
		t.Fatalf("JWT bundle %q: %v", jresp.Bundles["spiffe://example.org"], err)
	}

	// X.509-SVIDs by PID and by selectors, verified with the bundle.
	recvSVID := func(req *delegatedidentityv1.SubscribeToX509SVIDsRequest, want string) delegatedidentityv1.DelegatedIdentity_SubscribeToX509SVIDsClient {
		t.Helper()
		var stream delegatedidentityv1.DelegatedIdentity_SubscribeToX509SVIDsClient
		eventually(t, 30*time.Second, want+"'s X.509-SVID", func() error {
			if stream == nil {
				if stream, err = client.SubscribeToX509SVIDs(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			r, err := stream.Recv()
			if err != nil {
				t.Fatalf("SubscribeToX509SVIDs for %s: %v", want, err)
			}
			if len(r.X509Svids) == 0 {
				return errString("no SVID yet")
			}
			if len(r.X509Svids) != 1 {
				t.Fatalf("%d SVIDs for %s", len(r.X509Svids), want)
			}
			var chain []*x509.Certificate
			for _, der := range r.X509Svids[0].X509Svid.CertChain {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				chain = append(chain, c)
			}
			id, _, err := x509svid.Verify(chain, x509Bundle)
			if err != nil || id.String() != want {
				t.Fatalf("SVID %v does not verify as %s: %v", id, want, err)
			}
			if _, err := x509.ParsePKCS8PrivateKey(r.X509Svids[0].X509SvidKey); err != nil {
				t.Fatalf("key: %v", err)
			}
			return nil
		})
		return stream
	}
	pid := int32(sleeper.Process.Pid)
	byPID := recvSVID(&delegatedidentityv1.SubscribeToX509SVIDsRequest{Pid: pid}, "spiffe://example.org/sleeper")
	recvSVID(&delegatedidentityv1.SubscribeToX509SVIDsRequest{Selectors: []*types.Selector{{Type: "k8s", Value: "ns:demo"}}}, "spiffe://example.org/by-selector")

	// A JWT-SVID by PID, verified with the JWT bundle.
	jr, err := client.FetchJWTSVIDs(ctx, &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"db"}, Pid: pid})
	if err != nil {
		t.Fatal(err)
	}
	if len(jr.Svids) != 1 {
		t.Fatalf("%d JWT-SVIDs by PID", len(jr.Svids))
	}
	if svid, err := jwtsvid.ParseAndValidate(jr.Svids[0].Token, jwtBundle, []string{"db"}); err != nil || svid.ID.String() != "spiffe://example.org/sleeper" {
		t.Fatalf("JWT-SVID by PID: %v %v", svid, err)
	}

	// The sleeper exits: its stream ends, its PID is refused.
	sleeper.Process.Kill()
	sleeper.Wait()
	if _, err := byPID.Recv(); status.Code(err) != codes.NotFound {
		t.Fatalf("stream by PID after the exit: %v, want NotFound", err)
	}
	_, err = client.FetchJWTSVIDs(ctx, &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"db"}, Pid: pid})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != fmt.Sprintf("no process with PID %d", pid) {
		t.Fatalf("FetchJWTSVIDs for the exited PID: %v", err)
	}

	// Another program: no entry, then an entry that is not a delegate's.
	run := func() string {
		t.Helper()
		cmd := exec.CommandContext(ctx, other, "-test.run=^$")
		cmd.Env = append(os.Environ(), delegateSocketEnv+"="+adminSocket)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", other, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := run(); out != "PermissionDenied no identity issued" {
		t.Fatalf("a caller without an entry: %q", out)
	}
	s.createEntry(t, "-parentID", node, "-spiffeID", "spiffe://example.org/not-a-delegate", "-selector", "unix:path:"+other)
	eventually(t, 30*time.Second, "the non-delegate's refusal", func() error {
		switch out := run(); out {
		case "PermissionDenied caller not configured as an authorized delegate":
			return nil
		case "PermissionDenied no identity issued":
			return errString("its entry has not reached the agent")
		default:
			t.Fatalf("a caller that is not a delegate: %q", out)
		}
		return nil
	})
	if logs := a.proc.out.String(); !strings.Contains(logs, "caller not configured as an authorized delegate") ||
		!strings.Contains(logs, "subsystem=delegated_identity_api") {
		t.Fatalf("the refusal is not logged:\n%s", logs)
	}
}
