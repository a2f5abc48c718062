package external_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
	"github.com/spiffe-hw/spire-hw/server/credentialcomposer/external"
)

// plugin is an SDK CredentialComposer served over a real gRPC connection.
// Each hook, when set, answers its method; an unset hook answers
// Unimplemented, as a plugin that embeds the SDK's Unimplemented server
// does. Every request is recorded.
type plugin struct {
	credentialcomposerv1.UnimplementedCredentialComposerServer

	ca   func(*credentialcomposerv1.X509CAAttributes) (*credentialcomposerv1.X509CAAttributes, error)
	svid func(*credentialcomposerv1.X509SVIDAttributes) (*credentialcomposerv1.X509SVIDAttributes, error)
	jwt  func(*credentialcomposerv1.JWTSVIDAttributes) (*credentialcomposerv1.JWTSVIDAttributes, error)

	mu   sync.Mutex
	reqs []proto.Message
}

func (p *plugin) record(m proto.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, proto.Clone(m))
}

func (p *plugin) requests() []proto.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proto.Message(nil), p.reqs...)
}

func (p *plugin) ComposeServerX509CA(ctx context.Context, req *credentialcomposerv1.ComposeServerX509CARequest) (*credentialcomposerv1.ComposeServerX509CAResponse, error) {
	p.record(req)
	if p.ca == nil {
		return p.UnimplementedCredentialComposerServer.ComposeServerX509CA(ctx, req)
	}
	a, err := p.ca(req.GetAttributes())
	return &credentialcomposerv1.ComposeServerX509CAResponse{Attributes: a}, err
}

func (p *plugin) ComposeServerX509SVID(ctx context.Context, req *credentialcomposerv1.ComposeServerX509SVIDRequest) (*credentialcomposerv1.ComposeServerX509SVIDResponse, error) {
	p.record(req)
	if p.svid == nil {
		return p.UnimplementedCredentialComposerServer.ComposeServerX509SVID(ctx, req)
	}
	a, err := p.svid(req.GetAttributes())
	return &credentialcomposerv1.ComposeServerX509SVIDResponse{Attributes: a}, err
}

func (p *plugin) ComposeAgentX509SVID(ctx context.Context, req *credentialcomposerv1.ComposeAgentX509SVIDRequest) (*credentialcomposerv1.ComposeAgentX509SVIDResponse, error) {
	p.record(req)
	if p.svid == nil {
		return p.UnimplementedCredentialComposerServer.ComposeAgentX509SVID(ctx, req)
	}
	a, err := p.svid(req.GetAttributes())
	return &credentialcomposerv1.ComposeAgentX509SVIDResponse{Attributes: a}, err
}

func (p *plugin) ComposeWorkloadX509SVID(ctx context.Context, req *credentialcomposerv1.ComposeWorkloadX509SVIDRequest) (*credentialcomposerv1.ComposeWorkloadX509SVIDResponse, error) {
	p.record(req)
	if p.svid == nil {
		return p.UnimplementedCredentialComposerServer.ComposeWorkloadX509SVID(ctx, req)
	}
	a, err := p.svid(req.GetAttributes())
	return &credentialcomposerv1.ComposeWorkloadX509SVIDResponse{Attributes: a}, err
}

func (p *plugin) ComposeWorkloadJWTSVID(ctx context.Context, req *credentialcomposerv1.ComposeWorkloadJWTSVIDRequest) (*credentialcomposerv1.ComposeWorkloadJWTSVIDResponse, error) {
	p.record(req)
	if p.jwt == nil {
		return p.UnimplementedCredentialComposerServer.ComposeWorkloadJWTSVID(ctx, req)
	}
	a, err := p.jwt(req.GetAttributes())
	return &credentialcomposerv1.ComposeWorkloadJWTSVIDResponse{Attributes: a}, err
}

// echo answers with the request's attributes, the identity composition.
func echo[T any](a T) (T, error) { return a, nil }

// connect serves p on a Unix socket in a temporary directory and returns
// the adapter connected to it.
func connect(t *testing.T, p *plugin) *external.Composer {
	t.Helper()
	conn := grpctest.Serve(t, func(srv *grpc.Server) { credentialcomposerv1.RegisterCredentialComposerServer(srv, p) })
	return external.New(conn, "test")
}

var (
	td         = spiffeid.RequireTrustDomainFromString("example.org")
	workloadID = spiffeid.RequireFromPath(td, "/workload")
	agentID    = spiffeid.RequireFromPath(td, "/spire/agent/x/1")
	oidCustom  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	oidExtra   = asn1.ObjectIdentifier{2, 5, 4, 45}
)

func newKey(t *testing.T) crypto.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// fullSubject sets every field a DistinguishedName carries.
func fullSubject() pkix.Name {
	return pkix.Name{
		Country: []string{"US"}, Organization: []string{"SPIRE"}, OrganizationalUnit: []string{"ou"},
		Locality: []string{"l"}, Province: []string{"p"}, StreetAddress: []string{"s"}, PostalCode: []string{"pc"},
		SerialNumber: "sn", CommonName: "cn",
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidExtra, Value: "extra"}},
	}
}

func svidAttrs() credentialcomposer.X509SVIDAttributes {
	return credentialcomposer.X509SVIDAttributes{
		Subject:         fullSubject(),
		DNSNames:        []string{"a.test", "b.test"},
		ExtraExtensions: []pkix.Extension{{Id: oidCustom, Critical: true, Value: []byte{5, 0}}},
	}
}

func caAttrs() credentialcomposer.X509CAAttributes {
	return credentialcomposer.X509CAAttributes{
		Subject:         fullSubject(),
		Policies:        []x509.OID{mustOID("1.2.3.4"), mustOID("2.23.140.1.2.1")},
		ExtraExtensions: []pkix.Extension{{Id: oidCustom, Value: []byte{5, 0}}},
	}
}

// mustOID parses a constant OID of the test.
func mustOID(s string) x509.OID {
	oid, err := x509.ParseOID(s)
	if err != nil {
		panic(err)
	}
	return oid
}

// wantDN is fullSubject as the SDK carries it.
var wantDN = &credentialcomposerv1.DistinguishedName{
	Country: []string{"US"}, Organization: []string{"SPIRE"}, OrganizationalUnit: []string{"ou"},
	Locality: []string{"l"}, Province: []string{"p"}, StreetAddress: []string{"s"}, PostalCode: []string{"pc"},
	SerialNumber: "sn", CommonName: "cn",
	ExtraNames: []*credentialcomposerv1.AttributeTypeAndValue{{Oid: "2.5.4.45", StringValue: "extra"}},
}

func TestRequestsCarrySPIREConversions(t *testing.T) {
	p := &plugin{}
	c := connect(t, p)
	ctx := context.Background()
	pub := newKey(t)
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ComposeServerX509CA(ctx, caAttrs()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ComposeServerX509SVID(ctx, svidAttrs()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ComposeAgentX509SVID(ctx, agentID, pub, svidAttrs()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ComposeWorkloadX509SVID(ctx, workloadID, pub, svidAttrs()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, map[string]any{
		"sub": workloadID.String(), "aud": []string{"a", "b"}, "exp": int64(1700000300), "iat": int64(1700000000),
	}); err != nil {
		t.Fatal(err)
	}
	ext := []*credentialcomposerv1.X509Extension{{Oid: "1.3.6.1.4.1.99999.1", Critical: true, Value: []byte{5, 0}}}
	svid := &credentialcomposerv1.X509SVIDAttributes{Subject: wantDN, DnsSans: []string{"a.test", "b.test"}, ExtraExtensions: ext}
	claims, err := structpb.NewStruct(map[string]any{
		"sub": workloadID.String(), "aud": []any{"a", "b"}, "exp": 1700000300, "iat": 1700000000,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []proto.Message{
		&credentialcomposerv1.ComposeServerX509CARequest{Attributes: &credentialcomposerv1.X509CAAttributes{
			Subject: wantDN, PolicyIdentifiers: []string{"1.2.3.4", "2.23.140.1.2.1"},
			ExtraExtensions: []*credentialcomposerv1.X509Extension{{Oid: "1.3.6.1.4.1.99999.1", Value: []byte{5, 0}}},
		}},
		&credentialcomposerv1.ComposeServerX509SVIDRequest{Attributes: svid},
		&credentialcomposerv1.ComposeAgentX509SVIDRequest{Attributes: svid, SpiffeId: agentID.String(), PublicKey: pubDER},
		&credentialcomposerv1.ComposeWorkloadX509SVIDRequest{Attributes: svid, SpiffeId: workloadID.String(), PublicKey: pubDER},
		&credentialcomposerv1.ComposeWorkloadJWTSVIDRequest{Attributes: &credentialcomposerv1.JWTSVIDAttributes{Claims: claims}, SpiffeId: workloadID.String()},
	}
	got := p.requests()
	if len(got) != len(want) {
		t.Fatalf("got %d requests, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("request %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

// TestEchoRoundTrips: what a plugin hands back unchanged comes out as it
// went in, for every attribute the SDK carries.
func TestEchoRoundTrips(t *testing.T) {
	p := &plugin{ca: echo[*credentialcomposerv1.X509CAAttributes], svid: echo[*credentialcomposerv1.X509SVIDAttributes], jwt: echo[*credentialcomposerv1.JWTSVIDAttributes]}
	c := connect(t, p)
	ctx := context.Background()
	pub := newKey(t)

	gotCA, err := c.ComposeServerX509CA(ctx, caAttrs())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotCA, caAttrs()) {
		t.Errorf("CA attributes:\n got %+v\nwant %+v", gotCA, caAttrs())
	}
	for name, call := range map[string]func() (credentialcomposer.X509SVIDAttributes, error){
		"server": func() (credentialcomposer.X509SVIDAttributes, error) {
			return c.ComposeServerX509SVID(ctx, svidAttrs())
		},
		"agent": func() (credentialcomposer.X509SVIDAttributes, error) {
			return c.ComposeAgentX509SVID(ctx, agentID, pub, svidAttrs())
		},
		"workload": func() (credentialcomposer.X509SVIDAttributes, error) {
			return c.ComposeWorkloadX509SVID(ctx, workloadID, pub, svidAttrs())
		},
	} {
		got, err := call()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, svidAttrs()) {
			t.Errorf("%s attributes:\n got %+v\nwant %+v", name, got, svidAttrs())
		}
	}
	claims, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, map[string]any{"sub": "s", "aud": []string{"a"}, "exp": int64(7), "nested": map[string]any{"k": true}})
	if err != nil {
		t.Fatal(err)
	}
	// Through a protobuf Struct numbers become float64 and lists []any.
	want := map[string]any{"sub": "s", "aud": []any{"a"}, "exp": float64(7), "nested": map[string]any{"k": true}}
	if !reflect.DeepEqual(claims, want) {
		t.Errorf("claims: got %#v, want %#v", claims, want)
	}
}

// TestPluginChangesArrive: the plugin's answer replaces the attributes.
func TestPluginChangesArrive(t *testing.T) {
	p := &plugin{
		ca: func(a *credentialcomposerv1.X509CAAttributes) (*credentialcomposerv1.X509CAAttributes, error) {
			return &credentialcomposerv1.X509CAAttributes{
				Subject:           &credentialcomposerv1.DistinguishedName{CommonName: "ca"},
				PolicyIdentifiers: []string{"1.2.3"},
			}, nil
		},
		svid: func(a *credentialcomposerv1.X509SVIDAttributes) (*credentialcomposerv1.X509SVIDAttributes, error) {
			a.Subject.CommonName = "composed"
			a.DnsSans = append(a.DnsSans, "composed.test")
			a.ExtraExtensions = nil
			return a, nil
		},
		jwt: func(a *credentialcomposerv1.JWTSVIDAttributes) (*credentialcomposerv1.JWTSVIDAttributes, error) {
			a.Claims.Fields["composed"] = structpb.NewBoolValue(true)
			delete(a.Claims.Fields, "iat")
			return a, nil
		},
	}
	c := connect(t, p)
	ctx := context.Background()
	gotCA, err := c.ComposeServerX509CA(ctx, caAttrs())
	if err != nil {
		t.Fatal(err)
	}
	wantCA := credentialcomposer.X509CAAttributes{Subject: pkix.Name{CommonName: "ca"}, Policies: []x509.OID{mustOID("1.2.3")}}
	if !reflect.DeepEqual(gotCA, wantCA) {
		t.Errorf("CA: got %+v, want %+v", gotCA, wantCA)
	}
	got, err := c.ComposeWorkloadX509SVID(ctx, workloadID, newKey(t), svidAttrs())
	if err != nil {
		t.Fatal(err)
	}
	want := svidAttrs()
	want.Subject.CommonName = "composed"
	want.DNSNames = append(want.DNSNames, "composed.test")
	want.ExtraExtensions = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SVID: got %+v, want %+v", got, want)
	}
	claims, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, map[string]any{"sub": "s", "iat": int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"sub": "s", "composed": true}; !reflect.DeepEqual(claims, want) {
		t.Errorf("claims: got %#v, want %#v", claims, want)
	}
}

// TestNoChange: Unimplemented, or an answer without attributes, leaves the
// input as it was.
func TestNoChange(t *testing.T) {
	empty := func() *plugin {
		return &plugin{
			ca: func(*credentialcomposerv1.X509CAAttributes) (*credentialcomposerv1.X509CAAttributes, error) {
				return nil, nil
			},
			svid: func(*credentialcomposerv1.X509SVIDAttributes) (*credentialcomposerv1.X509SVIDAttributes, error) {
				return nil, nil
			},
			jwt: func(*credentialcomposerv1.JWTSVIDAttributes) (*credentialcomposerv1.JWTSVIDAttributes, error) {
				return nil, nil
			},
		}
	}
	for name, p := range map[string]*plugin{"unimplemented": {}, "empty response": empty()} {
		t.Run(name, func(t *testing.T) {
			c := connect(t, p)
			ctx := context.Background()
			pub := newKey(t)
			ca, err := c.ComposeServerX509CA(ctx, caAttrs())
			if err != nil || !reflect.DeepEqual(ca, caAttrs()) {
				t.Errorf("CA: %+v, %v", ca, err)
			}
			for kind, call := range map[string]func() (credentialcomposer.X509SVIDAttributes, error){
				"server": func() (credentialcomposer.X509SVIDAttributes, error) {
					return c.ComposeServerX509SVID(ctx, svidAttrs())
				},
				"agent": func() (credentialcomposer.X509SVIDAttributes, error) {
					return c.ComposeAgentX509SVID(ctx, agentID, pub, svidAttrs())
				},
				"workload": func() (credentialcomposer.X509SVIDAttributes, error) {
					return c.ComposeWorkloadX509SVID(ctx, workloadID, pub, svidAttrs())
				},
			} {
				got, err := call()
				if err != nil || !reflect.DeepEqual(got, svidAttrs()) {
					t.Errorf("%s: %+v, %v", kind, got, err)
				}
			}
			in := map[string]any{"sub": "s", "exp": int64(3)}
			claims, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, in)
			if err != nil || !reflect.DeepEqual(claims, in) {
				t.Errorf("JWT: %#v, %v", claims, err)
			}
			if n := len(p.requests()); n != 5 {
				t.Errorf("plugin saw %d calls, want 5", n)
			}
		})
	}
}

// TestRefusals: each conversion SPIRE refuses, with SPIRE's message and an
// Internal code, and the plugin's own errors with their code and the
// facade prefix.
func TestRefusals(t *testing.T) {
	badSubject := svidAttrs()
	badSubject.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidExtra, Value: 42}}
	badCASubject := caAttrs()
	badCASubject.Subject.ExtraNames = badSubject.Subject.ExtraNames
	pub := newKey(t)

	svidAnswer := func(edit func(*credentialcomposerv1.X509SVIDAttributes)) *plugin {
		return &plugin{svid: func(a *credentialcomposerv1.X509SVIDAttributes) (*credentialcomposerv1.X509SVIDAttributes, error) {
			edit(a)
			return a, nil
		}}
	}
	caAnswer := func(edit func(*credentialcomposerv1.X509CAAttributes)) *plugin {
		return &plugin{ca: func(a *credentialcomposerv1.X509CAAttributes) (*credentialcomposerv1.X509CAAttributes, error) {
			edit(a)
			return a, nil
		}}
	}
	denied := &plugin{
		svid: func(*credentialcomposerv1.X509SVIDAttributes) (*credentialcomposerv1.X509SVIDAttributes, error) {
			return nil, status.Error(codes.PermissionDenied, "test: not for you")
		},
		jwt: func(*credentialcomposerv1.JWTSVIDAttributes) (*credentialcomposerv1.JWTSVIDAttributes, error) {
			return nil, status.Error(codes.FailedPrecondition, "not configured")
		},
	}

	for _, tc := range []struct {
		name     string
		plugin   *plugin
		call     func(context.Context, *external.Composer) error
		code     codes.Code
		msg      string
		noCalled bool // the adapter refuses before calling the plugin
	}{
		{
			name: "agent ID empty", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid agent ID: empty",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeAgentX509SVID(ctx, spiffeid.ID{}, pub, svidAttrs())
				return err
			},
		},
		{
			name: "workload ID empty", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid workload ID: empty",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadX509SVID(ctx, spiffeid.ID{}, pub, svidAttrs())
				return err
			},
		},
		{
			name: "JWT workload ID empty", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid workload ID: empty",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadJWTSVID(ctx, spiffeid.ID{}, map[string]any{"sub": "x"})
				return err
			},
		},
		{
			name: "agent public key", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid agent X509SVID public key: x509: unsupported public key type: struct {}",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeAgentX509SVID(ctx, agentID, struct{}{}, svidAttrs())
				return err
			},
		},
		{
			name: "workload public key", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid workload X509SVID public key: x509: unsupported public key type: struct {}",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadX509SVID(ctx, workloadID, struct{}{}, svidAttrs())
				return err
			},
		},
		{
			name: "CA subject with a non-string value", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid X509CA attributes: only string values are allowed in extra name attributes",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509CA(ctx, badCASubject)
				return err
			},
		},
		{
			name: "server subject with a non-string value", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid server X509SVID attributes: only string values are allowed in extra name attributes",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509SVID(ctx, badSubject)
				return err
			},
		},
		{
			name: "agent subject with a non-string value", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid agent X509SVID attributes: only string values are allowed in extra name attributes",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeAgentX509SVID(ctx, agentID, pub, badSubject)
				return err
			},
		},
		{
			name: "workload subject with a non-string value", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid workload X509SVID attributes: only string values are allowed in extra name attributes",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadX509SVID(ctx, workloadID, pub, badSubject)
				return err
			},
		},
		{
			name: "empty claims", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid workload JWTSVID attributes: invalid claims: cannot be empty",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, map[string]any{})
				return err
			},
		},
		{
			name: "claims that are not JSON", plugin: &plugin{}, noCalled: true, code: codes.Internal,
			msg: "credentialcomposer(test): invalid workload JWTSVID attributes: failed to marshal claims: json: unsupported type: chan int",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, map[string]any{"c": make(chan int)})
				return err
			},
		},
		{
			name: "answer without subject", code: codes.Internal,
			plugin: svidAnswer(func(a *credentialcomposerv1.X509SVIDAttributes) { a.Subject = nil }),
			msg:    "credentialcomposer(test): plugin returned invalid X509SVID attributes: subject: cannot be empty",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadX509SVID(ctx, workloadID, pub, svidAttrs())
				return err
			},
		},
		{
			name: "answer with a bad extension OID", code: codes.Internal,
			plugin: svidAnswer(func(a *credentialcomposerv1.X509SVIDAttributes) { a.ExtraExtensions[0].Oid = "1.2.x" }),
			msg:    `credentialcomposer(test): plugin returned invalid X509SVID attributes: extra extensions: invalid OID: non-integer part "x"`,
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeAgentX509SVID(ctx, agentID, pub, svidAttrs())
				return err
			},
		},
		{
			name: "answer with an empty extension OID", code: codes.Internal,
			plugin: svidAnswer(func(a *credentialcomposerv1.X509SVIDAttributes) { a.ExtraExtensions[0].Oid = "" }),
			msg:    `credentialcomposer(test): plugin returned invalid X509SVID attributes: extra extensions: invalid OID: non-integer part ""`,
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509SVID(ctx, svidAttrs())
				return err
			},
		},
		{
			name: "answer with an unencodable extension OID", code: codes.Internal,
			plugin: svidAnswer(func(a *credentialcomposerv1.X509SVIDAttributes) { a.ExtraExtensions[0].Oid = "7" }),
			msg:    `credentialcomposer(test): plugin returned invalid X509SVID attributes: extra extensions: invalid OID: "7" is not an encodable object identifier`,
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509SVID(ctx, svidAttrs())
				return err
			},
		},
		{
			name: "answer with a bad extra name OID", code: codes.Internal,
			plugin: svidAnswer(func(a *credentialcomposerv1.X509SVIDAttributes) { a.Subject.ExtraNames[0].Oid = "2.5.-4" }),
			msg:    `credentialcomposer(test): plugin returned invalid X509SVID attributes: subject: extra names: invalid OID: negative part "-4"`,
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadX509SVID(ctx, workloadID, pub, svidAttrs())
				return err
			},
		},
		{
			name: "CA answer without subject", code: codes.Internal,
			plugin: caAnswer(func(a *credentialcomposerv1.X509CAAttributes) { a.Subject = nil }),
			msg:    "credentialcomposer(test): plugin returned invalid X509CA attributes: subject: cannot be empty",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509CA(ctx, caAttrs())
				return err
			},
		},
		{
			name: "CA answer with a bad policy identifier", code: codes.Internal,
			plugin: caAnswer(func(a *credentialcomposerv1.X509CAAttributes) { a.PolicyIdentifiers = []string{"1.2.three"} }),
			msg:    "credentialcomposer(test): plugin returned invalid X509CA attributes: policy identifiers: ",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509CA(ctx, caAttrs())
				return err
			},
		},
		{
			name: "CA answer with a bad extension OID", code: codes.Internal,
			plugin: caAnswer(func(a *credentialcomposerv1.X509CAAttributes) { a.ExtraExtensions[0].Oid = "a.b" }),
			msg:    `credentialcomposer(test): plugin returned invalid X509CA attributes: extra extensions: invalid OID: non-integer part "a"`,
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeServerX509CA(ctx, caAttrs())
				return err
			},
		},
		{
			name: "plugin error keeps its code", plugin: denied, code: codes.PermissionDenied,
			msg: "credentialcomposer(test): not for you",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadX509SVID(ctx, workloadID, pub, svidAttrs())
				return err
			},
		},
		{
			name: "plugin JWT error keeps its code", plugin: denied, code: codes.FailedPrecondition,
			msg: "credentialcomposer(test): not configured",
			call: func(ctx context.Context, c *external.Composer) error {
				_, err := c.ComposeWorkloadJWTSVID(ctx, workloadID, map[string]any{"sub": "x"})
				return err
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, tc.plugin)
			err := tc.call(context.Background(), c)
			if err == nil {
				t.Fatal("no error")
			}
			st, _ := status.FromError(err)
			if st.Code() != tc.code {
				t.Errorf("code %s, want %s (%v)", st.Code(), tc.code, err)
			}
			if !strings.HasPrefix(st.Message(), tc.msg) {
				t.Errorf("message %q, want it to start with %q", st.Message(), tc.msg)
			}
			if n := len(tc.plugin.requests()); tc.noCalled && n != 0 {
				t.Errorf("plugin was called %d times", n)
			}
		})
	}
}

func TestName(t *testing.T) {
	if got := connect(t, &plugin{}).Name(); got != "test" {
		t.Errorf("Name() = %q", got)
	}
}
