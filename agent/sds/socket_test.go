package sds_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/sds"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// cacheManager serves the Workload API from a real agent cache, as the
// agent's manager does.
type cacheManager struct{ *cache.Cache }

func (m cacheManager) SubscribeToCacheChanges(ctx context.Context, sels []*types.Selector) (cache.Subscription, error) {
	return m.Subscribe(ctx, sels), nil
}

func (m cacheManager) FetchJWTSVID(context.Context, *types.Entry, []string) (*cache.JWTSVID, error) {
	return nil, errors.New("no JWT-SVIDs in SDS tests")
}

// self is the selector the unix attestor gives this test process.
func self() []*types.Selector {
	return []*types.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(os.Geteuid())}}
}

// env is the agent's Workload API socket, served by workloadapi.Serve
// with the unix attestor over a real cache, and an SDS client on it.
type env struct {
	f    *sds.Fixture
	conn *grpc.ClientConn
	sds  secretv3.SecretDiscoveryServiceClient
}

func newEnv(t *testing.T, settings sds.Settings, dialOpts ...grpc.DialOption) *env {
	t.Helper()
	f := sds.NewFixture(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := workloadapi.New(workloadapi.Config{
		Manager:     cacheManager{f.Cache},
		Attestors:   []workloadapi.Attestor{unix.New(unix.Config{})},
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Log:         log,
	})
	dir, err := os.MkdirTemp("", "sds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- workloadapi.Serve(ctx, workloadapi.ServeConfig{SocketPath: sock, SDS: settings}, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Lstat(sock); err == nil && fi.Mode().Type() == fs.ModeSocket {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the socket did not appear")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// No workload.spiffe.io header: Envoy sends none, and SDS needs none.
	conn, err := grpc.NewClient("unix://"+sock, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{f: f, conn: conn, sds: secretv3.NewSecretDiscoveryServiceClient(conn)}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ask(names ...string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{TypeUrl: sds.SecretTypeURL, ResourceNames: names}
}

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || status.Convert(err).Message() != msg {
		t.Fatalf("got %v, want %v %q", err, code, msg)
	}
}

func TestFetchSecretsOverSocket(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	id := e.f.Add(t, "/workload", 1, self())
	resp, err := e.sds.FetchSecrets(ctxT(t), ask("default", "ROOTCA"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := sds.DecodeSecrets(t, resp)
	if len(secrets) != 2 {
		t.Fatalf("secrets %q", sds.SecretNames(secrets))
	}
	if order, _ := sds.SPIFFEValidator(t, secrets[0], "ROOTCA"); len(order) != 1 || order[0] != "example.org" {
		t.Fatalf("ROOTCA trust domains %v", order)
	}
	sds.CheckTLSCertificate(t, secrets[1], "default", id)
	if resp.VersionInfo != "" || resp.Nonce != "" {
		t.Fatalf("FetchSecrets answered with version %q nonce %q", resp.VersionInfo, resp.Nonce)
	}
}

func TestStreamPushesRotationAndNewEntries(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	id := e.f.Add(t, "/workload", 1, self())
	stream, err := e.sds.StreamSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ask("spiffe://example.org/workload")); err != nil {
		t.Fatal(err)
	}
	r1, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	sds.CheckTLSCertificate(t, sds.DecodeSecrets(t, r1)[0], "spiffe://example.org/workload", id)
	ack := ask("spiffe://example.org/workload")
	ack.VersionInfo, ack.ResponseNonce = r1.VersionInfo, r1.Nonce
	if err := stream.Send(ack); err != nil {
		t.Fatal(err)
	}

	rotated := e.f.Rotate(t, id)
	r2, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	sds.CheckTLSCertificate(t, sds.DecodeSecrets(t, r2)[0], "spiffe://example.org/workload", rotated)
	if r2.VersionInfo == r1.VersionInfo || r2.Nonce == r1.Nonce {
		t.Fatalf("rotation pushed as version %q nonce %q, the same as before", r2.VersionInfo, r2.Nonce)
	}

	// Asking for everything, then registering a second entry: pushed too.
	all := ask()
	all.VersionInfo, all.ResponseNonce = r2.VersionInfo, r2.Nonce
	if err := stream.Send(all); err != nil {
		t.Fatal(err)
	}
	r3, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := sds.SecretNames(sds.DecodeSecrets(t, r3)); len(got) != 2 {
		t.Fatalf("everything: %q", got)
	}
	e.f.Add(t, "/second", 2, self())
	r4, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := sds.SecretNames(sds.DecodeSecrets(t, r4))
	if len(got) != 3 || got[2] != "spiffe://example.org/second" {
		t.Fatalf("after a new entry: %q", got)
	}
}

func TestCallerWithoutEntry(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	e.f.Add(t, "/not-me", 1, []*types.Selector{{Type: "unix", Value: "uid:4000000000"}})

	// As SPIRE: the bundle is served, an SVID is refused.
	resp, err := e.sds.FetchSecrets(ctxT(t), ask())
	if err != nil {
		t.Fatal(err)
	}
	if got := sds.SecretNames(sds.DecodeSecrets(t, resp)); len(got) != 1 || got[0] != "spiffe://example.org" {
		t.Fatalf("secrets %q, want the trust domain's validation context only", got)
	}
	_, err = e.sds.FetchSecrets(ctxT(t), ask("default"))
	wantStatus(t, err, codes.InvalidArgument, `workload is not authorized for the requested identities ["default"]`)

	stream, err := e.sds.StreamSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ask("default")); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantStatus(t, err, codes.InvalidArgument, `workload is not authorized for the requested identities ["default"]`)
}

func TestConfiguredNames(t *testing.T) {
	e := newEnv(t, sds.Settings{DefaultSVIDName: "svid", DefaultBundleName: "trust", DisableSPIFFECertValidation: true})
	id := e.f.Add(t, "/workload", 1, self())
	resp, err := e.sds.FetchSecrets(ctxT(t), ask("svid", "trust"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := sds.DecodeSecrets(t, resp)
	if cas := sds.TrustedCA(t, secrets[0], "trust"); len(cas) != 1 || !cas[0].Equal(e.f.CA.Cert) {
		t.Fatal("trust is not the CA")
	}
	sds.CheckTLSCertificate(t, secrets[1], "svid", id)
	_, err = e.sds.FetchSecrets(ctxT(t), ask("default"))
	wantStatus(t, err, codes.InvalidArgument, `workload is not authorized for the requested identities ["default"]`)
}

func TestRequestCaps(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	e.f.Add(t, "/workload", 1, self())
	many := make([]string, sds.MaxResourceNames+1)
	_, err := e.sds.FetchSecrets(ctxT(t), ask(many...))
	wantStatus(t, err, codes.InvalidArgument, "too many resource names: 65 (at most 64 per request)")

	stream, err := e.sds.StreamSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ask(many...)); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantStatus(t, err, codes.InvalidArgument, "too many resource names: 65 (at most 64 per request)")
}

func TestDeltaSecretsUnimplemented(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	stream, err := e.sds.DeltaSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unimplemented, "Method is not implemented")
}

// A client that stops reading while its SVID rotates many times does not
// make the agent queue a response per rotation: the agent's send blocks on
// flow control, the cache view keeps only the latest update, and when the
// client reads again it gets a bounded backlog ending with the latest SVID.
func TestSlowReaderGetsLatestNotBacklog(t *testing.T) {
	// A fixed window (no BDP growth) makes the transport's buffering a
	// known 64 KiB.
	e := newEnv(t, sds.Settings{}, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	id := e.f.Add(t, "/workload", 1, self())
	stream, err := e.sds.StreamSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ask("default")); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	const rotations = 1000
	latest := id
	for range rotations {
		latest = e.f.Rotate(t, latest)
	}
	received := 0
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		received++
		s := sds.DecodeSecrets(t, resp)[0]
		certs := s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
		if string(certs) == string(sds.PEMOf(latest)) {
			break
		}
		if received > rotations {
			t.Fatal("the latest SVID never arrived")
		}
	}
	// Each response is about 1.3 KB: the transport holds at most ~100.
	if received > rotations/4 {
		t.Fatalf("%d responses for %d rotations: updates were queued, not coalesced", received, rotations)
	}
	t.Logf("%d rotations while not reading: %d responses, the last one the latest SVID", rotations, received)
}

func TestStreamPushesBundleChanges(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	e.f.Add(t, "/workload", 1, self())
	stream, err := e.sds.StreamSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ask("ROOTCA")); err != nil {
		t.Fatal(err)
	}
	r1, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if _, tds := sds.SPIFFEValidator(t, sds.DecodeSecrets(t, r1)[0], "ROOTCA"); len(tds["example.org"]) != 1 {
		t.Fatalf("ROOTCA holds %d authorities", len(tds["example.org"]))
	}
	// A second authority joins the bundle (a prepared CA): pushed.
	b := e.f.CA.Bundle()
	b.AddX509Authority(e.f.Fed.Cert)
	e.f.Cache.SetBundle(b)
	r2, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if _, tds := sds.SPIFFEValidator(t, sds.DecodeSecrets(t, r2)[0], "ROOTCA"); len(tds["example.org"]) != 2 || !tds["example.org"][1].Equal(e.f.Fed.Cert) {
		t.Fatalf("after the bundle changed, ROOTCA holds %d authorities", len(tds["example.org"]))
	}
}

// As in SPIRE, a stream whose asked-for SVID goes away (entry deleted)
// ends with the status a fresh request would get.
func TestStreamEndsWhenEntryGoes(t *testing.T) {
	e := newEnv(t, sds.Settings{})
	e.f.Add(t, "/workload", 1, self())
	stream, err := e.sds.StreamSecrets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(ask("default")); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	e.f.Cache.SetEntries(nil)
	_, err = stream.Recv()
	wantStatus(t, err, codes.InvalidArgument, `workload is not authorized for the requested identities ["default"]`)
}
