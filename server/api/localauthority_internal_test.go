package api

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

// swappableUpstream signs CA CSRs with whichever root it holds now, as an
// upstream whose operator replaced a compromised root does.
type swappableUpstream struct {
	mu   sync.Mutex
	root *testpki.CA
}

func (u *swappableUpstream) set(r *testpki.CA) { u.mu.Lock(); u.root = r; u.mu.Unlock() }

func (u *swappableUpstream) MintX509CA(_ context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	u.mu.Lock()
	root := u.root
	u.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject, URIs: csr.URIs,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(ttl),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, csr.PublicKey, root.Key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return []*x509.Certificate{c}, []*x509.Certificate{root.Cert}, nil
}

// TestUpstreamTaintAndRevoke: after the upstream root is replaced and the
// CA rotated onto the new one, the old upstream root can be tainted and
// revoked by its subject key ID; before that, the one signing the current
// CA is refused.
func TestUpstreamTaintAndRevoke(t *testing.T) {
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	store := sqlitetest.Open(t)
	oldRoot, err := testpki.NewRoot("old upstream")
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := testpki.NewRoot("new upstream")
	if err != nil {
		t.Fatal(err)
	}
	up := &swappableUpstream{root: oldRoot}
	m, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyManager: memory.New(), Store: store, Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	svc := &LocalAuthorityService{api: New(Config{TrustDomain: td, DataStore: store, CA: m, Log: slog.New(slog.DiscardHandler)})}
	oldSKID := fmt.Sprintf("%x", oldRoot.Cert.SubjectKeyId)

	_, err = svc.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: oldSKID})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("taint of the upstream signing the current CA: %v", err)
	}

	up.set(newRoot)
	prep, err := svc.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := prep.PreparedAuthority.UpstreamAuthoritySubjectKeyId; got != fmt.Sprintf("%x", newRoot.Cert.SubjectKeyId) {
		t.Fatalf("prepared CA's upstream authority %q", got)
	}
	// Still prepared: the old upstream signs the current CA.
	_, err = svc.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: oldSKID})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("taint before activation: %v", err)
	}
	if _, err := svc.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: prep.PreparedAuthority.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: oldSKID})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "failed to revoke X.509 upstream authority: it is not possible to revoke an untainted root CA" {
		t.Fatalf("revoke before taint: %v", err)
	}
	resp, err := svc.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: oldSKID})
	if err != nil || resp.UpstreamAuthoritySubjectKeyId != oldSKID {
		t.Fatalf("taint: %v %v", resp, err)
	}
	select {
	case <-m.X509AuthorityTainted():
	default:
		t.Fatal("the server SVID rotator was not told")
	}
	b, err := store.FetchBundle(ctx, td.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range b.X509Authorities {
		if a.Tainted != (string(a.Asn1) == string(oldRoot.Cert.Raw)) {
			t.Fatalf("wrong authority tainted")
		}
	}
	if _, err := svc.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: oldSKID}); err != nil {
		t.Fatal(err)
	}
	b, _ = store.FetchBundle(ctx, td.Name())
	if len(b.X509Authorities) != 1 || string(b.X509Authorities[0].Asn1) != string(newRoot.Cert.Raw) {
		t.Fatalf("bundle after revoke holds %d authorities", len(b.X509Authorities))
	}
}
