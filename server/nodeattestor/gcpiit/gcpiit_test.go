package gcpiit

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	agentgcp "github.com/spiffe-hw/spire-hw/agent/nodeattestor/gcpiit"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/sim/cloud"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func startSim(t *testing.T) *cloud.GCP {
	t.Helper()
	s, err := cloud.StartGCP(cloud.GCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

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

func saFile(t *testing.T, s *cloud.GCP) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(p, s.ServiceAccountJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newAttestor(t *testing.T, s *cloud.GCP, nodes NodeLookup, mod func(*Config)) *Attestor {
	t.Helper()
	cfg := Config{
		TrustDomain: td, ProjectIDAllowList: []string{"project-123"},
		CertsURL: s.CertsURL(), ComputeEndpoint: s.ComputeEndpoint(), Nodes: nodes,
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

func collect(t *testing.T, s *cloud.GCP) []byte {
	t.Helper()
	ag, err := agentgcp.New(agentgcp.PluginData{IdentityTokenHost: s.MetadataHost()})
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
	a := newAttestor(t, s, st, func(c *Config) {
		c.UseInstanceMetadata = true
		c.ServiceAccountFile = saFile(t, s)
		c.AllowedLabelKeys = []string{"env", "absent"}
		c.AllowedMetadataKeys = []string{"role"}
	})
	payload := collect(t, s)
	res, err := a.Attest(ctx, payload, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/spire/agent/gcp_iit/project-123/4412341234123412341"; res.AgentID.String() != want {
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
		"instance-name:blog-1", "label:env:prod", "metadata:role:frontend", "project-id:project-123",
		"sa:123456789-compute@developer.gserviceaccount.com", "tag:blog-server", "tag:http", "zone:us-central1-a",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("selectors\n%q\nwant\n%q", got, want)
	}
	if err := st.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: res.AgentID.String(), AttestationType: PluginName, CertSerial: "1", CertNotAfter: time.Now().Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	_, err = a.Attest(ctx, collect(t, s), nil, nil)
	wantErr(t, err, codes.PermissionDenied, "already used to attest an agent; evict it first")
	if _, err := st.DeleteAttestedNode(ctx, res.AgentID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(ctx, payload, nil, nil); err != nil {
		t.Fatalf("after eviction: %v", err)
	}
}

func TestMetadataTooLarge(t *testing.T) {
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		c.UseInstanceMetadata = true
		c.ServiceAccountFile = saFile(t, s)
		c.AllowedMetadataKeys = []string{"startup-script"}
		c.MaxMetadataValueSize = 8
	})
	_, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	wantErr(t, err, codes.PermissionDenied, `metadata "startup-script" is 18 bytes`)
}

func TestAgentPathTemplate(t *testing.T) {
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.AgentPathTemplate = "/{{ .PluginName }}/{{ .Zone }}/{{ .InstanceName }}" })
	res, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.Path() != "/spire/agent/gcp_iit/us-central1-a/blog-1" {
		t.Fatalf("agent ID %s", res.AgentID)
	}
	// SPIRE's template functions (agentpath) work here too.
	fa := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		c.AgentPathTemplate = `/{{ .Zone | splitList "-" | first }}/{{ .InstanceName | regexFind "[0-9]+$" | printf "n%s" }}`
	})
	res, err = fa.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.Path() != "/spire/agent/us/n1" {
		t.Fatalf("agent ID %s", res.AgentID)
	}
}

// TestCertsCache: keys are reused until the Expires time of the certs
// response, then fetched again; a failed refetch is not attempted when
// nothing is stale.
func TestCertsCache(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	clk := &clock{}
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.Now = clk.now })
	tok := collect(t, s)
	for range 3 {
		if _, err := a.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.CertsRequests(); n != 1 {
		t.Fatalf("%d certs fetches, want 1", n)
	}
	clk.advance(50 * time.Minute) // still within the simulator's one-hour Expires
	if _, err := a.Verify(ctx, tok); err != nil || s.CertsRequests() != 1 {
		t.Fatalf("refetched before Expires: %v, %d", err, s.CertsRequests())
	}
	clk.advance(11 * time.Minute)
	if _, err := a.Verify(ctx, mintAt(t, s, clk.now())); err != nil || s.CertsRequests() != 2 {
		t.Fatalf("not refetched after Expires: %v, %d", err, s.CertsRequests())
	}
	// A rotated key is found by refetching for the unknown kid.
	if err := s.RotateKey(); err != nil {
		t.Fatal(err)
	}
	clk.advance(31 * time.Second)
	if _, err := a.Verify(ctx, mintAt(t, s, clk.now())); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
}

// mintAt mints a token valid at now, for tests whose clock runs ahead.
func mintAt(t *testing.T, s *cloud.GCP, now time.Time) []byte {
	t.Helper()
	c := s.Claims(Audience)
	c["iat"], c["exp"] = now.Unix(), now.Add(time.Hour).Unix()
	tok, err := s.MintToken(c)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok)
}

func b64(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }

func TestAttacks(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	a := newAttestor(t, s, sqlitetest.Open(t), nil)
	now := time.Now()
	mint := func(mod func(map[string]any)) []byte {
		c := s.Claims(Audience)
		mod(c)
		tok, err := s.MintToken(c)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(tok)
	}
	claimsJSON, _ := json.Marshal(s.Claims(Audience))
	algNone := b64(`{"alg":"none","kid":"`+s.KeyID()+`"}`) + "." + base64.RawURLEncoding.EncodeToString(claimsJSON) + "."
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, (&jose.SignerOptions{}).WithHeader("kid", s.KeyID()))
	hsTok, _ := jwt.Signed(hs).Claims(s.Claims(Audience)).Serialize()
	rogueKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rogue := func(alg jose.SignatureAlgorithm, kid string) []byte {
		sg, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: rogueKey, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := jwt.Signed(sg).Claims(s.Claims(Audience)).Serialize()
		return []byte(tok)
	}

	for _, tc := range []struct {
		name    string
		payload []byte
		code    codes.Code
		err     string
	}{
		{"expired", mint(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Minute).Unix() }), codes.PermissionDenied, "token is expired"},
		{"not yet valid", mint(func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() }), codes.PermissionDenied, "not valid yet"},
		{"issued in the future", mint(func(c map[string]any) { c["iat"] = now.Add(10 * time.Minute).Unix() }), codes.PermissionDenied, "issued in the future"},
		{"no exp", mint(func(c map[string]any) { delete(c, "exp") }), codes.PermissionDenied, "no exp"},
		{"no iss", mint(func(c map[string]any) { delete(c, "iss") }), codes.PermissionDenied, "no iss"},
		{"wrong issuer", mint(func(c map[string]any) { c["iss"] = "https://evil.example" }), codes.PermissionDenied, "invalid issuer"},
		{"wrong audience", mint(func(c map[string]any) { c["aud"] = "https://example.org" }), codes.PermissionDenied, "invalid audience"},
		{"project not allowed", mint(func(c map[string]any) {
			c["google"].(map[string]any)["compute_engine"].(map[string]any)["project_id"] = "other-project"
		}), codes.PermissionDenied, `project "other-project" is not in the allow list`},
		{"standard format (no compute_engine)", mint(func(c map[string]any) { delete(c, "google") }), codes.PermissionDenied, "no compute_engine claims"},
		{"alg none", []byte(algNone), codes.InvalidArgument, "malformed token"},
		{"HS256 signed", []byte(hsTok), codes.InvalidArgument, "malformed token"},
		{"RS384 signed", rogue(jose.RS384, s.KeyID()), codes.InvalidArgument, "malformed token"},
		{"key ID not in key set", rogue(jose.RS256, "not-a-google-kid"), codes.PermissionDenied, "is not in the certificate set"},
		{"published key ID, other key", rogue(jose.RS256, s.KeyID()), codes.PermissionDenied, "token signature"},
		{"no key ID", rogue(jose.RS256, ""), codes.InvalidArgument, "key ID"},
		{"garbage payload", []byte("\xff\xfe garbage"), codes.InvalidArgument, "malformed token"},
		{"empty payload", nil, codes.InvalidArgument, "empty payload"},
		{"oversized payload", make([]byte, MaxPayloadSize+1), codes.InvalidArgument, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Attest(ctx, tc.payload, nil, nil)
			wantErr(t, err, tc.code, tc.err)
		})
	}
}

func TestPluginData(t *testing.T) {
	s := startSim(t)
	text := `plugins {
  NodeAttestor "gcp_iit" {
    plugin_data {
      projectid_allow_list = ["project-123"]
      use_instance_metadata = true
      service_account_file = "` + saFile(t, s) + `"
      allowed_label_keys = ["team"]
      max_metadata_value_size = 64
      certs_url = "` + s.CertsURL() + `"
      compute_endpoint = "` + s.ComputeEndpoint() + `"
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
	if !slices.ContainsFunc(res.Selectors, func(s *types.Selector) bool { return s.GetValue() == "label:team:web" }) {
		t.Fatalf("selectors %v", res.Selectors)
	}
	if _, err := New(Config{TrustDomain: td, Nodes: sqlitetest.Open(t)}); err == nil {
		t.Fatal("empty projectid_allow_list accepted")
	}
}
