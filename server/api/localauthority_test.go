package api_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

// wantRefusal checks a refusal's code and SPIRE's message.
func wantRefusal(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || st.Message() != msg {
		t.Fatalf("got %v, want %v %q", err, code, msg)
	}
}

// TestLocalAuthorityX509 drives a forced rotation through the admin socket
// and checks each refusal SPIRE makes on the way.
func TestLocalAuthorityX509(t *testing.T) {
	logs := &syncbuf.Buffer{}
	s := servertest.Start(t, servertest.Options{Log: logs})
	ctx := context.Background()
	la := localauthorityv1.NewLocalAuthorityClient(s.Admin(t))

	// Admin only: an agent is refused.
	agent := s.NewAgent(t)
	_, err := localauthorityv1.NewLocalAuthorityClient(agent.Conn).GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
	wantCode(t, err, codes.PermissionDenied)

	st, err := la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first := st.Active.GetAuthorityId()
	if first == "" || st.Prepared != nil || st.Old != nil || st.Active.ExpiresAt == 0 {
		t.Fatalf("initial state %v", st)
	}

	// Refusals before anything is prepared.
	_, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{})
	wantRefusal(t, err, codes.InvalidArgument, "no authority ID provided")
	_, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.InvalidArgument, "unexpected authority ID")
	_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.InvalidArgument, "unable to taint current local authority")
	_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: "0123abcd"})
	wantRefusal(t, err, codes.InvalidArgument, "unexpected authority ID")
	_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.InvalidArgument, "invalid authority ID: unable to use current authority")
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: "ab"})
	wantRefusal(t, err, codes.FailedPrecondition, "upstream authority is not configured")
	_, err = la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: "ab"})
	wantRefusal(t, err, codes.FailedPrecondition, "upstream authority is not configured")

	prep, err := la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := prep.PreparedAuthority.GetAuthorityId()
	if next == "" || next == first {
		t.Fatalf("prepared %v", prep)
	}
	st, _ = la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
	if st.Active.AuthorityId != first || st.Prepared.GetAuthorityId() != next {
		t.Fatalf("after prepare %v", st)
	}
	// A prepared authority can be neither tainted nor revoked.
	_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: next})
	wantRefusal(t, err, codes.InvalidArgument, "only Old local authorities can be tainted: unsupported local authority status: PREPARED")
	_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: next})
	wantRefusal(t, err, codes.InvalidArgument, "invalid authority ID: only Old local authority can be revoked")

	act, err := la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: next})
	if err != nil {
		t.Fatal(err)
	}
	if act.ActivatedAuthority.GetAuthorityId() != next {
		t.Fatalf("activated %v", act)
	}
	st, _ = la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
	if st.Active.AuthorityId != next || st.Old.GetAuthorityId() != first || st.Prepared != nil {
		t.Fatalf("after activate %v", st)
	}
	// Activating again: the next slot is old now.
	_, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.Internal, "only Prepared authorities can be activated: unsupported local authority status: OLD")

	_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.Internal, "failed to revoke X.509 authority: it is not possible to revoke an untainted root CA")

	tr, err := la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first})
	if err != nil {
		t.Fatal(err)
	}
	if tr.TaintedAuthority.GetAuthorityId() != first {
		t.Fatalf("tainted %v", tr)
	}
	_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.Internal, "failed to taint X.509 authority: root CA is already tainted")
	if got := taintedSKIDs(t, s); len(got) != 1 || got[0] != first {
		t.Fatalf("tainted in the public bundle: %v", got)
	}

	if _, err := la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first}); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Bundle(t).X509Authorities() {
		if fmt.Sprintf("%x", c.SubjectKeyId) == first {
			t.Fatal("revoked authority still in the bundle")
		}
	}
	_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.Internal, "failed to revoke X.509 authority: no root CA found with provided subject key ID")
	if !strings.Contains(logs.String(), "unable to taint current local authority") {
		t.Error("refusal not logged with its reason")
	}
}

// taintedSKIDs reads the bundle as agents do and lists the tainted X.509
// authorities.
func taintedSKIDs(t *testing.T, s *servertest.Server) []string {
	t.Helper()
	b, err := bundlev1.NewBundleClient(s.Admin(t)).GetBundle(context.Background(), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range b.X509Authorities {
		if !a.Tainted {
			continue
		}
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%x", c.SubjectKeyId))
	}
	return out
}

func TestLocalAuthorityJWT(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	la := localauthorityv1.NewLocalAuthorityClient(s.Admin(t))
	st, err := la.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first := st.Active.GetAuthorityId()
	_, err = la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.InvalidArgument, "unexpected authority ID")
	_, err = la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.InvalidArgument, "unable to taint current local authority")
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: "unknown"})
	wantRefusal(t, err, codes.InvalidArgument, "invalid authority ID: no JWT authority found with provided authority ID")

	prep, err := la.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := prep.PreparedAuthority.GetAuthorityId()
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: next})
	wantRefusal(t, err, codes.InvalidArgument, "invalid authority ID: unable to use a prepared key")
	if _, err := la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: next}); err != nil {
		t.Fatal(err)
	}
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.Internal, "failed to revoke JWT authority: it is not possible to revoke an untainted key")
	if _, err := la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: first}); err != nil {
		t.Fatal(err)
	}
	_, err = la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: first})
	wantRefusal(t, err, codes.Internal, "failed to taint JWT authority: key is already tainted")
	if _, err := la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: first}); err != nil {
		t.Fatal(err)
	}
	if _, ok := jwtBundle(t, s).FindJWTAuthority(first); ok {
		t.Fatal("revoked JWT key still in the bundle")
	}
}

// TestLocalAuthorityUpstream: with an upstream authority the local X.509
// taint and revoke give way to the upstream ones, which refuse the upstream
// certificate that signs the current CA.
func TestLocalAuthorityUpstream(t *testing.T) {
	root, err := testpki.NewRoot("upstream root")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPEM, err := testpki.KeyPEM(root.Key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "up.crt"), filepath.Join(dir, "up.key")
	if err := os.WriteFile(certPath, testpki.CertsPEM(root.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, servertest.Options{Plugins: fmt.Sprintf(
		`UpstreamAuthority "disk" { plugin_data { cert_file_path = %q key_file_path = %q } }`, certPath, keyPath)})
	ctx := context.Background()
	la := localauthorityv1.NewLocalAuthorityClient(s.Admin(t))
	st, err := la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	upID := fmt.Sprintf("%x", root.Cert.SubjectKeyId)
	if st.Active.UpstreamAuthoritySubjectKeyId != upID {
		t.Fatalf("upstream authority ID %q, want %q", st.Active.UpstreamAuthoritySubjectKeyId, upID)
	}
	_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: st.Active.AuthorityId})
	wantRefusal(t, err, codes.FailedPrecondition, "local authority can't be tainted if there is an upstream authority")
	_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: st.Active.AuthorityId})
	wantRefusal(t, err, codes.FailedPrecondition, "local authority can't be revoked if there is an upstream authority")
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{})
	wantRefusal(t, err, codes.InvalidArgument, "provided subject key id is not valid: no subject key ID provided")
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: strings.ToUpper(upID)})
	wantRefusal(t, err, codes.InvalidArgument, "provided subject key id is not valid: unable to use upstream authority singing current authority")
	_, err = la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: "abcdef"})
	wantRefusal(t, err, codes.InvalidArgument, "invalid subject key ID: upstream authority didn't sign the old local authority")
}
