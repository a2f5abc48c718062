package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

func webRelationship(td, url string) *types.FederationRelationship {
	return &types.FederationRelationship{TrustDomain: td, BundleEndpointUrl: url,
		BundleEndpointProfile: &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}}
}

func spiffeRelationship(td, url, endpointID string) *types.FederationRelationship {
	return &types.FederationRelationship{TrustDomain: td, BundleEndpointUrl: url,
		BundleEndpointProfile: &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: endpointID}}}
}

func foreignBundle(t *testing.T, td string) *types.Bundle {
	t.Helper()
	root, err := testpki.NewRoot(td + " root")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &types.Bundle{TrustDomain: td, X509Authorities: []*types.X509Certificate{{Asn1: root.Cert.Raw}},
		JwtAuthorities: []*types.JWTKey{{KeyId: "k1", PublicKey: der, ExpiresAt: time.Now().Add(time.Hour).Unix()}}, RefreshHint: 60, SequenceNumber: 3}
}

func wantStatus(t *testing.T, what string, st *types.Status, code codes.Code, msg string) {
	t.Helper()
	if codes.Code(st.GetCode()) != code || st.GetMessage() != msg {
		t.Fatalf("%s: status %v %q, want %v %q", what, codes.Code(st.GetCode()), st.GetMessage(), code, msg)
	}
}

func wantErr(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || st.Message() != msg {
		t.Fatalf("%s: %v, want %v %q", what, err, code, msg)
	}
}

// TestFederationRelationshipValidation: every relationship SPIRE refuses
// is refused with SPIRE's status and message, item by item, beside one
// that is accepted.
func TestFederationRelationshipValidation(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	c := trustdomainv1.NewTrustDomainClient(s.Admin(t))
	ctx := context.Background()
	mismatched := webRelationship("foreign.test", "https://foreign.test/bundle")
	mismatched.TrustDomainBundle = foreignBundle(t, "other.test")
	badKey := webRelationship("badkey.test", "https://badkey.test/bundle")
	badKey.TrustDomainBundle = &types.Bundle{TrustDomain: "badkey.test", JwtAuthorities: []*types.JWTKey{{KeyId: "k", PublicKey: []byte("junk")}}}
	for _, tt := range []struct {
		name string
		in   *types.FederationRelationship
		code codes.Code
		// msg is the whole message, or its start when it ends in ": "
		// (the rest is in Go's words, a DER parser's).
		msg string
	}{
		{"accepted", webRelationship("ok.test", "https://ok.test/bundle"), codes.OK, "OK"},
		{"own trust domain", webRelationship(td.Name(), "https://example.org/bundle"), codes.InvalidArgument, "unable to create federation relationship for server trust domain"},
		{"bad trust domain", webRelationship("Bad.Test", "https://bad.test/b"), codes.InvalidArgument,
			"failed to convert federation relationship: failed to parse trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"},
		{"http URL", webRelationship("http.test", "http://http.test/b"), codes.InvalidArgument, "failed to convert federation relationship: bundle endpoint URL must use the https scheme"},
		{"no host", webRelationship("nohost.test", "https:///b"), codes.InvalidArgument, "failed to convert federation relationship: bundle endpoint URL must specify the host"},
		{"user info", webRelationship("user.test", "https://u:p@user.test/b"), codes.InvalidArgument, "failed to convert federation relationship: bundle endpoint URL must not contain user info"},
		{"no profile", &types.FederationRelationship{TrustDomain: "np.test", BundleEndpointUrl: "https://np.test/b"}, codes.InvalidArgument,
			"failed to convert federation relationship: unsupported bundle endpoint profile type: <nil>"},
		{"https_spiffe without ID", spiffeRelationship("noid.test", "https://noid.test/b", ""), codes.InvalidArgument,
			"failed to convert federation relationship: failed to parse endpoint SPIFFE ID: cannot be empty"},
		{"bundle of another trust domain", mismatched, codes.InvalidArgument,
			`failed to convert federation relationship: trust domain bundle ("other.test") must match the trust domain of the federation relationship ("foreign.test")`},
		{"malformed JWT key", badKey, codes.InvalidArgument,
			"failed to convert federation relationship: failed to parse bundle: unable to parse JWT authority: "},
		// A nil item reaches the server as an empty one.
		{"empty relationship", nil, codes.InvalidArgument, "failed to convert federation relationship: failed to parse trust domain: trust domain is missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
				FederationRelationships: []*types.FederationRelationship{tt.in}})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Results) != 1 {
				t.Fatalf("%d results", len(resp.Results))
			}
			r := resp.Results[0]
			if strings.HasSuffix(tt.msg, ": ") {
				if codes.Code(r.Status.Code) != tt.code || !strings.HasPrefix(r.Status.Message, tt.msg) {
					t.Fatalf("status %v", r.Status)
				}
			} else {
				wantStatus(t, tt.name, r.Status, tt.code, tt.msg)
			}
			if (r.FederationRelationship != nil) != (tt.code == codes.OK) {
				t.Fatalf("relationship %v with status %v", r.FederationRelationship, r.Status)
			}
		})
	}
	list, err := c.ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{})
	if err != nil || len(list.FederationRelationships) != 1 || list.FederationRelationships[0].TrustDomain != "ok.test" {
		t.Fatalf("only the accepted one is stored: %v %v", list, err)
	}
}

// TestFederationRelationshipLifecycle drives every method through the
// admin socket onto a real SQLite store: create with a bundle, get, list
// in pages, update under a mask, delete, and SPIRE's answers for
// relationships that do not exist.
func TestFederationRelationshipLifecycle(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	c := trustdomainv1.NewTrustDomainClient(s.Admin(t))
	ctx := context.Background()

	withBundle := spiffeRelationship("td-a.test", "https://td-a.test:8443/bundle", "spiffe://td-a.test/spire/server")
	withBundle.TrustDomainBundle = foreignBundle(t, "td-a.test")
	noBundle := spiffeRelationship("td-b.test", "https://td-b.test/bundle", "spiffe://td-c.test/spire/server")
	created, err := c.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{withBundle, noBundle, webRelationship("td-d.test", "https://td-d.test/b"), webRelationship("td-a.test", "https://dup.test/b")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		wantStatus(t, "create", created.Results[i].Status, codes.OK, "OK")
	}
	if !proto.Equal(created.Results[0].FederationRelationship, withBundle) {
		t.Fatalf("created %v, want %v", created.Results[0].FederationRelationship, withBundle)
	}
	// SPIRE answers Internal for an existing relationship, quoting the
	// store's error.
	if st := created.Results[3].Status; codes.Code(st.Code) != codes.Internal || !strings.HasPrefix(st.Message, "failed to create federation relationship: ") {
		t.Fatalf("duplicate: %v", st)
	}
	// The https_spiffe endpoint of td-b.test is authenticated by
	// td-c.test's bundle, which is nowhere: SPIRE's warning.
	logs.waitLine(t, "bundle not found for the endpoint SPIFFE ID trust domain", "trust_domain_id=td-b.test", "endpoint_spiffe_id=spiffe://td-c.test/spire/server")
	if l := logs.lines("bundle not found for the endpoint SPIFFE ID trust domain", "trust_domain_id=td-a.test"); len(l) != 0 {
		t.Fatalf("warned for a relationship with its bundle: %q", l)
	}
	// The relationship's bundle is the federated bundle.
	got, err := c.GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: "td-a.test"})
	if err != nil || !proto.Equal(got, withBundle) {
		t.Fatalf("get: %v %v", got, err)
	}
	got, err = c.GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: "td-a.test",
		OutputMask: &types.FederationRelationshipMask{BundleEndpointUrl: true}})
	if err != nil || !proto.Equal(got, &types.FederationRelationship{TrustDomain: "td-a.test", BundleEndpointUrl: "https://td-a.test:8443/bundle"}) {
		t.Fatalf("get with mask: %v %v", got, err)
	}
	_, err = c.GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: "none.test"})
	wantErr(t, "get missing", err, codes.NotFound, "federation relationship does not exist")
	_, err = c.GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: "spiffe://"})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "failed to parse trust domain: ") {
		t.Fatalf("get bad trust domain: %v", err)
	}

	// Pages of one, in trust domain order, then the end.
	var names []string
	token := ""
	for range 5 {
		page, err := c.ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, fr := range page.FederationRelationships {
			names = append(names, fr.TrustDomain)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if strings.Join(names, ",") != "td-a.test,td-b.test,td-d.test" {
		t.Fatalf("paged list %v", names)
	}

	// An update under a mask changes the URL alone; the profile given
	// beside it is ignored.
	moved := webRelationship("td-a.test", "https://td-a.test:9443/moved")
	upd, err := c.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{moved, webRelationship("none.test", "https://none.test/b")},
		InputMask:               &types.FederationRelationshipMask{BundleEndpointUrl: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "update", upd.Results[0].Status, codes.OK, "OK")
	want := proto.Clone(withBundle).(*types.FederationRelationship)
	want.BundleEndpointUrl = "https://td-a.test:9443/moved"
	if !proto.Equal(upd.Results[0].FederationRelationship, want) {
		t.Fatalf("updated %v, want %v", upd.Results[0].FederationRelationship, want)
	}
	if st := upd.Results[1].Status; codes.Code(st.Code) != codes.Internal || !strings.HasPrefix(st.Message, "failed to update federation relationship: ") {
		t.Fatalf("update of a missing relationship: %v", st)
	}
	// Without a mask everything given replaces what is stored.
	upd, err = c.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{moved}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "full update", upd.Results[0].Status, codes.OK, "OK")
	if p := upd.Results[0].FederationRelationship.GetHttpsWeb(); p == nil {
		t.Fatalf("profile not changed: %v", upd.Results[0].FederationRelationship)
	}
	// An invalid relationship is refused whatever the mask, as in SPIRE.
	upd, err = c.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{webRelationship("td-a.test", "http://td-a.test/b")},
		InputMask:               &types.FederationRelationshipMask{TrustDomainBundle: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "invalid update", upd.Results[0].Status, codes.InvalidArgument, "failed to convert federation relationship: bundle endpoint URL must use the https scheme")

	del, err := c.BatchDeleteFederationRelationship(ctx, &trustdomainv1.BatchDeleteFederationRelationshipRequest{TrustDomains: []string{"td-b.test", "td-b.test", "", "spiffe://"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "delete", del.Results[0].Status, codes.OK, "OK")
	wantStatus(t, "delete again", del.Results[1].Status, codes.NotFound, "federation relationship not found")
	wantStatus(t, "delete empty", del.Results[2].Status, codes.InvalidArgument, "missing trust domain")
	if st := del.Results[3].Status; codes.Code(st.Code) != codes.InvalidArgument || !strings.HasPrefix(st.Message, "failed to parse trust domain: ") {
		t.Fatalf("delete bad trust domain: %v", st)
	}
	if del.Results[0].TrustDomain != "td-b.test" {
		t.Fatalf("delete result names %q", del.Results[0].TrustDomain)
	}
	list, err := c.ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{})
	if err != nil || len(list.FederationRelationships) != 2 || list.NextPageToken != "" {
		t.Fatalf("list after delete: %v %v", list, err)
	}

	// SPIRE's audit lines: one per item, with the item's fields.
	logs.waitLine(t, "API accessed", "method=BatchCreateFederationRelationship", "status=success", "trust_domain_id=td-a.test",
		"bundle_endpoint_url=https://td-a.test:8443/bundle", "bundle_endpoint_profile=https_spiffe", "endpoint_spiffe_id=spiffe://td-a.test/spire/server",
		"bundle_trust_domain_id=td-a.test", "bundle_refresh_hint=60", "bundle_sequence_number=3", "bundle_jwt_authority_key_id.0=k1", "bundle_x509_authorities_asn1_sha256.0=")
	logs.waitLine(t, "API accessed", "method=BatchCreateFederationRelationship", "status=error", "status_code=Internal", "bundle_endpoint_url=https://dup.test/b", "bundle_endpoint_profile=https_web")
	if n := len(logs.lines("API accessed", "method=BatchCreateFederationRelationship")); n != 4 {
		t.Fatalf("%d audit lines for a batch of four", n)
	}
	if l := logs.waitLine(t, "API accessed", "method=BatchUpdateFederationRelationship", "status=success", "bundle_endpoint_url=https://td-a.test:9443/moved"); strings.Contains(l, "bundle_endpoint_profile=") {
		t.Fatalf("a field outside the input mask audited: %s", l)
	}
	logs.waitLine(t, "API accessed", "method=BatchDeleteFederationRelationship", "status=error", "status_code=NotFound", "trust_domain_id=td-b.test")
	logs.waitLine(t, "API accessed", "method=GetFederationRelationship", "status=error", "status_code=NotFound", "trust_domain_id=none.test")
	logs.waitLine(t, "API accessed", "method=ListFederationRelationships", "status=success")
}

// TestTrustDomainAdminOnly: as in SPIRE's policy, no method is open to an
// agent or an anonymous TCP caller.
func TestTrustDomainAdminOnly(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	ctx := context.Background()
	agent := s.NewAgent(t)
	for _, c := range []trustdomainv1.TrustDomainClient{trustdomainv1.NewTrustDomainClient(s.Dial(t, nil)), trustdomainv1.NewTrustDomainClient(agent.Conn)} {
		_, err := c.ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{})
		wantCode(t, err, codes.PermissionDenied)
		_, err = c.GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: "a.test"})
		wantCode(t, err, codes.PermissionDenied)
		_, err = c.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{})
		wantCode(t, err, codes.PermissionDenied)
		_, err = c.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{})
		wantCode(t, err, codes.PermissionDenied)
		_, err = c.BatchDeleteFederationRelationship(ctx, &trustdomainv1.BatchDeleteFederationRelationshipRequest{})
		wantCode(t, err, codes.PermissionDenied)
		_, err = c.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: "a.test"})
		wantCode(t, err, codes.PermissionDenied)
	}
}
