package azuremsi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	agentazure "github.com/spiffe-hw/spire-hw/agent/nodeattestor/azuremsi"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/sim/cloud"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func startSim(t *testing.T) *cloud.Azure {
	t.Helper()
	s, err := cloud.StartAzure(cloud.AzureConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

const resource = "api://spire-node-attestor"

func newAttestor(t *testing.T, s *cloud.Azure, nodes NodeLookup, mod func(*Config)) *Attestor {
	t.Helper()
	id, secret := s.AppCredentials()
	vm := s.VM()
	cfg := Config{
		TrustDomain: td,
		Tenants: map[string]TenantConfig{vm.TenantID: {
			ResourceID: resource, SubscriptionID: vm.SubscriptionID, AppID: id, AppSecret: secret,
		}},
		DiscoveryURL: s.DiscoveryURL(), LoginEndpoint: s.LoginEndpoint(), ARMEndpoint: s.ARMEndpoint(), Nodes: nodes,
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func collect(t *testing.T, s *cloud.Azure) []byte {
	t.Helper()
	ag, err := agentazure.New(agentazure.PluginData{ResourceID: resource, IMDSEndpoint: s.IMDSEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ag.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantErr(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %v %q", code, substr)
	}
	if status.Code(err) != code || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %v; want %v containing %q", err, code, substr)
	}
}

func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	st := sqlitetest.Open(t)
	a := newAttestor(t, s, st, nil)
	payload := collect(t, s)
	res, err := a.Attest(ctx, payload, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm := s.VM()
	if want := "spiffe://example.org/spire/agent/azure_msi/" + vm.TenantID + "/" + vm.PrincipalID; res.AgentID.String() != want {
		t.Fatalf("agent ID %s, want %s", res.AgentID, want)
	}
	var got []string
	for _, sel := range res.Selectors {
		if sel.Type != PluginName {
			t.Fatalf("selector type %q", sel.Type)
		}
		got = append(got, sel.Value)
	}
	want := []string{
		"network-security-group:frontend:webservers",
		"subscription-id:" + vm.SubscriptionID,
		"virtual-network-subnet:frontend:vnet:default",
		"virtual-network:frontend:vnet",
		"vm-name:frontend:blog",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("selectors\n%q\nwant\n%q", got, want)
	}

	if err := st.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: res.AgentID.String(), AttestationType: PluginName, CertSerial: "1", CertNotAfter: time.Now().Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	// A fresh token for the same principal is still the same identity.
	_, err = a.Attest(ctx, collect(t, s), nil, nil)
	wantErr(t, err, codes.PermissionDenied, "already used to attest an agent; evict it first")
	if _, err := st.DeleteAttestedNode(ctx, res.AgentID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(ctx, payload, nil, nil); err != nil {
		t.Fatalf("after eviction: %v", err)
	}
}

// TestWithoutARM: without app credentials the selectors come from the
// token's signed xms_mirid.
func TestWithoutARM(t *testing.T) {
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		c.Tenants = map[string]TenantConfig{s.VM().TenantID: {ResourceID: resource}}
		c.AgentPathTemplate = "/{{ .PluginName }}/{{ .PrincipalID }}"
	})
	res, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.Path() != "/spire/agent/azure_msi/"+s.VM().PrincipalID {
		t.Fatalf("agent ID %s", res.AgentID)
	}
	// SPIRE's template functions (agentpath) work here too.
	fa := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		c.Tenants = map[string]TenantConfig{s.VM().TenantID: {ResourceID: resource}}
		c.AgentPathTemplate = `/{{ .PluginName | replace "_" "-" }}/{{ .PrincipalID | upper | trunc 8 }}`
	})
	res, err = fa.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/spire/agent/azure-msi/" + strings.ToUpper(s.VM().PrincipalID)[:8]; res.AgentID.Path() != want {
		t.Fatalf("agent ID %s, want path %s", res.AgentID, want)
	}
	if len(res.Selectors) != 2 || res.Selectors[1].Value != "vm-name:frontend:blog" {
		t.Fatalf("selectors %v", res.Selectors)
	}
}

func TestKeyRotationAndOutage(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	clk := &clock{}
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.Now = clk.now; c.Tenants[s.VM().TenantID] = TenantConfig{ResourceID: resource} })
	oldTok := collect(t, s)
	if _, err := a.Verify(ctx, oldTok); err != nil {
		t.Fatal(err)
	}
	fetches := s.DiscoveryRequests()
	if _, err := a.Verify(ctx, oldTok); err != nil || s.DiscoveryRequests() != fetches {
		t.Fatalf("keys not cached: %v, %d fetches", err, s.DiscoveryRequests()-fetches)
	}
	// Past the refresh interval, with discovery down: the known keys stay.
	s.SetDiscoveryFailing(true)
	clk.advance(DefaultKeyRefresh + time.Second)
	if _, err := a.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old keys dropped when the refresh failed: %v", err)
	}
	// A rotated key is unknown while discovery is down...
	if err := s.RotateKey(); err != nil {
		t.Fatal(err)
	}
	newTok := collect(t, s)
	_, err := a.Verify(ctx, newTok)
	wantErr(t, err, codes.PermissionDenied, "is not in the key set")
	// ...and found once it is back, after the refresh rate limit.
	s.SetDiscoveryFailing(false)
	clk.advance(31 * time.Second)
	if _, err := a.Verify(ctx, newTok); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}
}

func b64(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }

func payloadOf(tok string) []byte {
	b, _ := json.Marshal(map[string]string{"token": tok})
	return b
}

func TestAttacks(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), nil)
	now := time.Now()
	mint := func(mod func(map[string]any)) []byte {
		c := s.Claims(resource)
		mod(c)
		tok, err := s.MintToken(c)
		if err != nil {
			t.Fatal(err)
		}
		return payloadOf(tok)
	}
	claimsJSON, _ := json.Marshal(s.Claims(resource))
	algNone := payloadOf(b64(`{"alg":"none","kid":"`+s.KeyID()+`"}`) + "." + base64.RawURLEncoding.EncodeToString(claimsJSON) + ".")
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, (&jose.SignerOptions{}).WithHeader("kid", s.KeyID()))
	if err != nil {
		t.Fatal(err)
	}
	hsTok, _ := jwt.Signed(hs).Claims(s.Claims(resource)).Serialize()
	rogueKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	signRogue := func(kid string) []byte {
		sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: rogueKey, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := jwt.Signed(sg).Claims(s.Claims(resource)).Serialize()
		return payloadOf(tok)
	}

	for _, tc := range []struct {
		name    string
		payload []byte
		code    codes.Code
		err     string
	}{
		{"expired", mint(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Minute).Unix() }), codes.PermissionDenied, "token is expired"},
		{"not yet valid", mint(func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() }), codes.PermissionDenied, "not valid yet"},
		{"no exp", mint(func(c map[string]any) { delete(c, "exp") }), codes.PermissionDenied, "no exp"},
		{"wrong audience", mint(func(c map[string]any) { c["aud"] = "https://management.azure.com/" }), codes.PermissionDenied, "invalid audience"},
		{"wrong issuer", mint(func(c map[string]any) { c["iss"] = "https://login.microsoftonline.com/other/v2.0" }), codes.PermissionDenied, "invalid issuer"},
		{"tenant not allowed", mint(func(c map[string]any) { c["tid"] = "ffffffff-0000-0000-0000-000000000000" }), codes.PermissionDenied, "is not authorized"},
		{"no subject", mint(func(c map[string]any) { delete(c, "sub") }), codes.PermissionDenied, "no subject"},
		{"subject escaping its segment", mint(func(c map[string]any) { c["sub"] = ".." }), codes.PermissionDenied, "agent path"},
		{"alg none", algNone, codes.InvalidArgument, "malformed token"},
		{"HS256 signed", payloadOf(hsTok), codes.InvalidArgument, "malformed token"},
		{"key ID not in key set", signRogue("not-a-published-kid"), codes.PermissionDenied, "is not in the key set"},
		{"published key ID, other key", signRogue(s.KeyID()), codes.PermissionDenied, "token signature"},
		{"no key ID", signRogue(""), codes.InvalidArgument, "no key ID"},
		{"garbage payload", []byte("\xff\xfe"), codes.InvalidArgument, "malformed payload"},
		{"garbage token", payloadOf("a.b.c"), codes.InvalidArgument, "malformed token"},
		{"empty token", payloadOf(""), codes.InvalidArgument, "no token"},
		{"oversized payload", append([]byte(`{"token":"`), make([]byte, MaxPayloadSize)...), codes.InvalidArgument, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Attest(ctx, tc.payload, nil, nil)
			wantErr(t, err, tc.code, tc.err)
		})
	}
}

// TestLeeway: a token expired a minute ago is still inside the leeway.
func TestLeeway(t *testing.T) {
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.Tenants[s.VM().TenantID] = TenantConfig{ResourceID: resource} })
	c := s.Claims(resource)
	c["exp"] = time.Now().Add(-time.Minute).Unix()
	tok, err := s.MintToken(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(context.Background(), payloadOf(tok)); err != nil {
		t.Fatal(err)
	}
}

func TestWrongAppSecret(t *testing.T) {
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		tc := c.Tenants[s.VM().TenantID]
		tc.AppSecret = "wrong"
		c.Tenants[s.VM().TenantID] = tc
	})
	_, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	wantErr(t, err, codes.Internal, "invalid_client")
}

func TestAgentNeedsMetadataHeader(t *testing.T) {
	s := startSim(t)
	ag, err := agentazure.New(agentazure.PluginData{IMDSEndpoint: s.IMDSEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ag.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The default resource is ARM's, which this server does not accept.
	a := newAttestor(t, s, sqlitetest.Open(t), nil)
	_, err = a.Attest(context.Background(), b, nil, nil)
	wantErr(t, err, codes.PermissionDenied, "invalid audience")
}

func TestPluginData(t *testing.T) {
	s := startSim(t)
	vm := s.VM()
	id, secret := s.AppCredentials()
	text := `plugins {
  NodeAttestor "azure_msi" {
    plugin_data {
      tenants = {
        "` + vm.TenantID + `" = {
          resource_id = "` + resource + `"
          subscription_id = "` + vm.SubscriptionID + `"
          app_id = "` + id + `"
          app_secret = "` + secret + `"
        }
      }
      oidc_discovery_url = "` + s.DiscoveryURL() + `"
      login_endpoint = "` + s.LoginEndpoint() + `"
      arm_endpoint = "` + s.ARMEndpoint() + `"
    }
  }
}`
	d := hclconf.NewDiagnostics("server.conf")
	root := hclconf.Parse(d, []byte(text), false)
	ps := hclconf.ParsePlugins(root, []hclconf.PluginRule{{Type: "NodeAttestor", Min: 1, Max: -1}})
	if d.HasErrors() || len(ps) != 1 {
		t.Fatal(d.Err())
	}
	var data PluginData
	if err := ps[0].DecodeData(&data); err != nil {
		t.Fatal(err)
	}
	a, err := NewFromPluginData(td, data, sqlitetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Selectors) != 5 {
		t.Fatalf("selectors %v", res.Selectors)
	}
	if _, err := New(Config{TrustDomain: td, Nodes: sqlitetest.Open(t), Tenants: map[string]TenantConfig{"t": {AppID: "x"}}}); err == nil {
		t.Fatal("half-configured app credentials accepted")
	}
}
