package notifier_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	plugintypes "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/bundlepublisher"
	bpexternal "github.com/spiffe-hw/spire-hw/server/bundlepublisher/external"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/notifier"
	"github.com/spiffe-hw/spire-hw/server/notifier/external"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// event is what a plugin received: its kind and the bundle.
type event struct {
	kind   string // "loaded", "updated", "published"
	bundle *plugintypes.Bundle
}

// notifierPlugin reports every event on a channel; failLoaded vetoes
// start-up.
type notifierPlugin struct {
	notifierv1.UnimplementedNotifierServer
	events     chan event
	failLoaded error
}

func (p *notifierPlugin) NotifyAndAdvise(_ context.Context, req *notifierv1.NotifyAndAdviseRequest) (*notifierv1.NotifyAndAdviseResponse, error) {
	p.events <- event{"loaded", req.GetBundleLoaded().GetBundle()}
	if p.failLoaded != nil {
		return nil, p.failLoaded
	}
	return &notifierv1.NotifyAndAdviseResponse{}, nil
}

func (p *notifierPlugin) Notify(_ context.Context, req *notifierv1.NotifyRequest) (*notifierv1.NotifyResponse, error) {
	p.events <- event{"updated", req.GetBundleUpdated().GetBundle()}
	return &notifierv1.NotifyResponse{}, nil
}

type publisherPlugin struct {
	bundlepublisherv1.UnimplementedBundlePublisherServer
	events chan event
	fail   error
}

func (p *publisherPlugin) PublishBundle(_ context.Context, req *bundlepublisherv1.PublishBundleRequest) (*bundlepublisherv1.PublishBundleResponse, error) {
	p.events <- event{"published", req.GetBundle()}
	if p.fail != nil {
		return nil, p.fail
	}
	return &bundlepublisherv1.PublishBundleResponse{}, nil
}

func newNotifier(t *testing.T, name string, p *notifierPlugin) notifier.Notifier {
	conn := grpctest.Serve(t, func(s *grpc.Server) { notifierv1.RegisterNotifierServer(s, p) })
	return external.New(conn, name)
}

func newPublisher(t *testing.T, name string, p *publisherPlugin) bundlepublisher.Publisher {
	conn := grpctest.Serve(t, func(s *grpc.Server) { bundlepublisherv1.RegisterBundlePublisherServer(s, p) })
	return bpexternal.New(conn, name)
}

func rootCert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func jwtKey(t *testing.T, kid string) *types.JWTKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &types.JWTKey{KeyId: kid, PublicKey: pub, ExpiresAt: time.Now().Add(time.Hour).Unix()}
}

// storeWithBundle is a real SQLite datastore holding td's bundle with one
// root.
func storeWithBundle(t *testing.T) (*sqlstore.Store, []byte) {
	t.Helper()
	st := sqlitetest.Open(t)
	root := rootCert(t)
	if _, err := st.AppendBundle(context.Background(), &types.Bundle{TrustDomain: td.Name(), X509Authorities: []*types.X509Certificate{{Asn1: root}}}); err != nil {
		t.Fatal(err)
	}
	return st, root
}

func expect(t *testing.T, ch chan event, kind string) *plugintypes.Bundle {
	t.Helper()
	e := <-ch
	if e.kind != kind {
		t.Fatalf("plugin received %q, want %q", e.kind, kind)
	}
	return e.bundle
}

func kids(b *plugintypes.Bundle) []string {
	var out []string
	for _, k := range b.GetJwtAuthorities() {
		out = append(out, k.KeyId)
	}
	return out
}

func TestStartAndUpdates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, root := storeWithBundle(t)
	np := &notifierPlugin{events: make(chan event, 10)}
	pp := &publisherPlugin{events: make(chan event, 10)}
	w := notifier.NewWatcher(st, td, []notifier.Notifier{newNotifier(t, "n1", np)}, []bundlepublisher.Publisher{newPublisher(t, "p1", pp)}, nil)

	if err := w.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	for _, b := range []*plugintypes.Bundle{expect(t, np.events, "loaded"), expect(t, pp.events, "published")} {
		if b.TrustDomain != "example.org" || len(b.X509Authorities) != 1 || string(b.X509Authorities[0].Asn1) != string(root) {
			t.Fatalf("plugin received bundle %v, want the stored one", b)
		}
	}

	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(ctx) }()

	// The bundle is what Start delivered: Run sends nothing until it
	// changes, so the first events after the change carry the change.
	w.Changed()
	if _, err := st.AppendBundle(ctx, &types.Bundle{TrustDomain: td.Name(), JwtAuthorities: []*types.JWTKey{jwtKey(t, "k1")}}); err != nil {
		t.Fatal(err)
	}
	w.Changed()
	for _, b := range []*plugintypes.Bundle{expect(t, np.events, "updated"), expect(t, pp.events, "published")} {
		if got := kids(b); len(got) != 1 || got[0] != "k1" {
			t.Fatalf("update carries JWT keys %v, want [k1]", got)
		}
	}
	w.Changed()
	w.Changed()
	if _, err := st.AppendBundle(ctx, &types.Bundle{TrustDomain: td.Name(), JwtAuthorities: []*types.JWTKey{jwtKey(t, "k2")}}); err != nil {
		t.Fatal(err)
	}
	w.Changed()
	for _, b := range []*plugintypes.Bundle{expect(t, np.events, "updated"), expect(t, pp.events, "published")} {
		if got := kids(b); len(got) != 2 {
			t.Fatalf("second update carries JWT keys %v, want k1 and k2 (an unchanged bundle was sent again?)", got)
		}
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
}

func TestStartFailsOnNotifierVeto(t *testing.T) {
	st, _ := storeWithBundle(t)
	good := &notifierPlugin{events: make(chan event, 1)}
	bad := &notifierPlugin{events: make(chan event, 1), failLoaded: status.Error(codes.FailedPrecondition, "cannot write the bundle ConfigMap")}
	w := notifier.NewWatcher(st, td, []notifier.Notifier{newNotifier(t, "good", good), newNotifier(t, "k8sbundle", bad)}, nil, nil)
	err := w.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `notifier "k8sbundle"`) || !strings.Contains(err.Error(), "notifier(k8sbundle): cannot write the bundle ConfigMap") {
		t.Fatalf("Start = %v, want the failing notifier named", err)
	}
	if st, ok := status.FromError(err); !ok || st.Code() != codes.FailedPrecondition {
		t.Fatalf("Start lost the plugin's code: %v", err)
	}
	if strings.Contains(err.Error(), `"good"`) {
		t.Fatalf("Start blames the notifier that succeeded: %v", err)
	}
}

func TestStartFailsWithoutBundle(t *testing.T) {
	np := &notifierPlugin{events: make(chan event, 1)}
	w := notifier.NewWatcher(sqlitetest.Open(t), td, []notifier.Notifier{newNotifier(t, "n", np)}, nil, nil)
	if err := w.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without a bundle")
	}
}

// TestFailingPublisherLoggedOthersServed: a publisher's failure is logged
// with its name and does not keep the bundle from the others.
func TestFailingPublisherLoggedOthersServed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, _ := storeWithBundle(t)
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	np := &notifierPlugin{events: make(chan event, 10)}
	bad := &publisherPlugin{events: make(chan event, 10), fail: status.Error(codes.Unavailable, "bucket unreachable")}
	w := notifier.NewWatcher(st, td, []notifier.Notifier{newNotifier(t, "n1", np)}, []bundlepublisher.Publisher{newPublisher(t, "s3", bad)}, log)
	if err := w.Start(ctx); err != nil {
		t.Fatalf("Start: a publisher's failure must not abort start-up: %v", err)
	}
	expect(t, np.events, "loaded")
	expect(t, bad.events, "published")
	if !strings.Contains(logs.String(), "bundle_publisher=s3") || !strings.Contains(logs.String(), "bucket unreachable") {
		t.Fatalf("failure not logged with the plugin name:\n%s", logs.String())
	}

	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = w.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	if _, err := st.AppendBundle(ctx, &types.Bundle{TrustDomain: td.Name(), JwtAuthorities: []*types.JWTKey{jwtKey(t, "k1")}}); err != nil {
		t.Fatal(err)
	}
	w.Changed()
	// A new bundle is tried at once, even though the last one failed.
	expect(t, np.events, "updated")
	if got := kids(expect(t, bad.events, "published")); len(got) != 1 {
		t.Fatalf("publisher received JWT keys %v after the change", got)
	}
}
