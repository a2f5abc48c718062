package k8spsat_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/k8spsat"
	"github.com/spiffe-hw/spire-hw/sim/k8s"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// fixture is a simulated cluster with one node and the agent's pod.
type fixture struct {
	c    *k8s.Cluster
	node k8s.Node
	pod  k8s.Pod
}

func newFixture(t *testing.T, opts k8s.Options) *fixture {
	t.Helper()
	c, err := k8s.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f := &fixture{c: c}
	f.node = k8s.Node{Name: "node-1", UID: k8s.NewUID(), InternalIP: "10.1.2.3", Labels: map[string]string{"zone": "a", "secret": "x"}}
	f.pod = k8s.Pod{Namespace: "spire", Name: "spire-agent-x1", UID: k8s.NewUID(), ServiceAccount: "spire-agent", NodeName: "node-1", HostIP: "10.1.2.3", Labels: map[string]string{"app": "spire-agent", "other": "y"}}
	c.PutNode(f.node)
	c.PutPod(f.pod)
	return f
}

func (f *fixture) attestor(t *testing.T, mod func(*k8spsat.Cluster)) *k8spsat.Attestor {
	t.Helper()
	client, err := k8spsat.NewAPIClient(k8spsat.ClientConfig{URL: f.c.URL(), CAPEM: f.c.CAPEM(), Token: f.c.BearerToken()})
	if err != nil {
		t.Fatal(err)
	}
	cl := &k8spsat.Cluster{
		Client:               client,
		Audience:             []string{k8spsat.DefaultAudience},
		ServiceAccounts:      []string{"spire:spire-agent"},
		AllowedNodeLabelKeys: []string{"zone"},
		AllowedPodLabelKeys:  []string{"app"},
	}
	if mod != nil {
		mod(cl)
	}
	a, err := k8spsat.New(k8spsat.Config{TrustDomain: td, Clusters: map[string]*k8spsat.Cluster{"prod": cl}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (f *fixture) token(t *testing.T, aud ...string) string {
	t.Helper()
	if len(aud) == 0 {
		aud = []string{k8spsat.DefaultAudience}
	}
	tok, err := f.c.MintToken(f.pod.Namespace, f.pod.Name, aud, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func payload(t testing.TB, cluster, token string) []byte {
	t.Helper()
	b, err := json.Marshal(k8spsat.AttestationData{Cluster: cluster, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func noChallenge(context.Context, []byte) ([]byte, error) {
	panic("k8s_psat must not send a challenge")
}

func TestAttest(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, k8s.Options{Algorithm: alg})
			res, err := f.attestor(t, nil).Attest(context.Background(), payload(t, "prod", f.token(t)), nil, noChallenge)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := k8spsat.AgentID(td, "prod", f.node.UID)
			if res.AgentID != want || !strings.HasSuffix(res.AgentID.String(), "/spire/agent/k8s_psat/prod/"+f.node.UID) {
				t.Fatalf("agent ID %s, want %s", res.AgentID, want)
			}
			if !res.CanReattest {
				t.Error("PSAT agents can re-attest")
			}
			var got []string
			for _, s := range res.Selectors {
				if s.Type != "k8s_psat" {
					t.Errorf("selector type %q", s.Type)
				}
				got = append(got, s.Value)
			}
			wantSel := []string{
				"cluster:prod", "agent_ns:spire", "agent_sa:spire-agent", "agent_pod_name:spire-agent-x1",
				"agent_pod_uid:" + f.pod.UID, "agent_node_ip:10.1.2.3", "agent_node_name:node-1",
				"agent_node_uid:" + f.node.UID, "agent_node_label:zone:a", "agent_pod_label:app:spire-agent",
			}
			if !slices.Equal(got, wantSel) {
				t.Fatalf("selectors\n got %q\nwant %q", got, wantSel)
			}
		})
	}
}

// TestAttacks: every refused attestation is a named row.
func TestAttacks(t *testing.T) {
	f := newFixture(t, k8s.Options{})
	other := newFixture(t, k8s.Options{})
	noLookup := newFixture(t, k8s.Options{DisableLookup: true})
	deaf := newFixture(t, k8s.Options{IgnoreSpecAudiences: true})
	now := time.Now()
	base := func(fx *fixture) k8s.Claims {
		tok := fx.token(t)
		var c k8s.Claims
		parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			t.Fatal(err)
		}
		if err := parsed.UnsafeClaimsWithoutVerification(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	signed := func(mod func(*k8s.Claims)) string {
		c := base(f)
		mod(&c)
		tok, err := f.c.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	unsignedNone := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		b, _ := json.Marshal(base(f))
		return h + "." + base64.RawURLEncoding.EncodeToString(b) + "."
	}
	// HS256 keyed with the cluster's public key: the classic algorithm
	// confusion attack on verifiers that take the key type from the token.
	hs256 := func() string {
		pub, _ := json.Marshal(f.c.PublicKey())
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(base(f)).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	selfSigned := func() string {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, nil)
		tok, _ := jwt.Signed(s).Claims(base(f)).Serialize()
		return tok
	}

	type row struct {
		name    string
		fx      *fixture
		payload func() []byte
		mod     func(*k8spsat.Cluster)
		before  func()
		code    codes.Code
		msg     string
	}
	rows := []row{
		{name: "expired_token", payload: func() []byte {
			return payload(t, "prod", signed(func(c *k8s.Claims) { c.Expiry = now.Add(-time.Second).Unix(); c.IssuedAt = now.Add(-time.Hour).Unix() }))
		}, code: codes.PermissionDenied, msg: "expired"},
		{name: "not_yet_valid_token", payload: func() []byte {
			return payload(t, "prod", signed(func(c *k8s.Claims) { c.NotBefore = now.Add(time.Hour).Unix() }))
		}, code: codes.PermissionDenied, msg: "not valid yet"},
		{name: "wrong_audience", payload: func() []byte { return payload(t, "prod", f.token(t, "vault")) }, code: codes.PermissionDenied, msg: "audiences"},
		{name: "api_server_ignores_requested_audience", fx: deaf, payload: func() []byte {
			return payload(t, "prod", deaf.token(t, k8s.DefaultIssuer))
		}, code: codes.PermissionDenied, msg: "status audiences"},
		{name: "alg_none", payload: func() []byte { return payload(t, "prod", unsignedNone()) }, code: codes.PermissionDenied, msg: "not authenticated"},
		{name: "hs256_keyed_with_public_key", payload: func() []byte { return payload(t, "prod", hs256()) }, code: codes.PermissionDenied, msg: "not authenticated"},
		{name: "signed_by_unknown_key", payload: func() []byte { return payload(t, "prod", selfSigned()) }, code: codes.PermissionDenied, msg: "not authenticated"},
		{name: "token_of_another_cluster", payload: func() []byte { return payload(t, "prod", other.token(t)) }, code: codes.PermissionDenied, msg: "not authenticated"},
		{name: "wrong_issuer", payload: func() []byte {
			return payload(t, "prod", signed(func(c *k8s.Claims) { c.Issuer = "https://evil" }))
		}, code: codes.PermissionDenied, msg: "issuer"},
		{name: "tampered_signature", payload: func() []byte {
			tok := f.token(t)
			i := strings.LastIndexByte(tok, '.')
			sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
			sig[0] ^= 1
			return payload(t, "prod", tok[:i+1]+base64.RawURLEncoding.EncodeToString(sig))
		}, code: codes.PermissionDenied, msg: "not authenticated"},
		{name: "service_account_not_allowed", mod: func(c *k8spsat.Cluster) { c.ServiceAccounts = []string{"spire:other"} },
			payload: func() []byte { return payload(t, "prod", f.token(t)) }, code: codes.PermissionDenied, msg: "not an allowed service account"},
		{name: "unknown_cluster", payload: func() []byte { return payload(t, "staging", f.token(t)) }, code: codes.PermissionDenied, msg: "not configured"},
		{name: "token_not_bound_to_pod", payload: func() []byte {
			return payload(t, "prod", signed(func(c *k8s.Claims) { c.Kube.Pod = nil; c.Kube.Node = nil }))
		}, code: codes.PermissionDenied, msg: "not bound to a pod"},
		// The API server itself refuses a token whose pod was recreated.
		{name: "pod_recreated_api_server_lookup", fx: f, payload: func() []byte { return payload(t, "prod", f.token(t)) },
			before: func() { p := f.pod; p.UID = k8s.NewUID(); f.c.PutPod(p) }, code: codes.PermissionDenied, msg: "does not match claim"},
		// Without service-account lookup the API server authenticates it:
		// the attestor's own check of the live pod's UID refuses it.
		{name: "pod_recreated_uid_changed", fx: noLookup, payload: func() []byte { return payload(t, "prod", noLookup.token(t)) },
			before: func() { p := noLookup.pod; p.UID = k8s.NewUID(); noLookup.c.PutPod(p) }, code: codes.PermissionDenied, msg: "recreated"},
		{name: "pod_deleted", fx: noLookup, payload: func() []byte { return payload(t, "prod", noLookup.token(t)) },
			before: func() { noLookup.c.DeletePod(noLookup.pod.Namespace, noLookup.pod.Name) }, code: codes.PermissionDenied, msg: "no longer exists"},
		{name: "server_credentials_rejected", mod: func(c *k8spsat.Cluster) {
			c.Client, _ = k8spsat.NewAPIClient(k8spsat.ClientConfig{URL: f.c.URL(), CAPEM: f.c.CAPEM(), Token: "wrong"})
		}, payload: func() []byte { return payload(t, "prod", f.token(t)) }, code: codes.Unavailable, msg: "401"},
		{name: "garbage_payload", payload: func() []byte { return []byte("\x00not json") }, code: codes.InvalidArgument},
		{name: "empty_token", payload: func() []byte { return payload(t, "prod", "") }, code: codes.InvalidArgument, msg: "no token"},
		{name: "oversized_payload", payload: func() []byte { return payload(t, "prod", strings.Repeat("a", k8spsat.MaxPayload)) }, code: codes.InvalidArgument, msg: "larger"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			fx := r.fx
			if fx == nil {
				fx = f
			}
			a := fx.attestor(t, r.mod)
			p := r.payload()
			if r.before != nil {
				r.before()
			}
			_, err := a.Attest(context.Background(), p, nil, noChallenge)
			if status.Code(err) != r.code || !strings.Contains(err.Error(), r.msg) {
				t.Fatalf("got %v, want %v containing %q", err, r.code, r.msg)
			}
		})
	}
}

func parsePlugin(t *testing.T, text string) hclconf.Plugin {
	t.Helper()
	d := hclconf.NewDiagnostics("test.conf")
	root := hclconf.Parse(d, []byte(text), false)
	ps := hclconf.ParsePlugins(root, []hclconf.PluginRule{{Type: "NodeAttestor", Min: 1, Max: -1}})
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	return ps[0]
}

// TestPluginData wires the attestor from HCL both ways the API server can
// be named: a kubeconfig file, and the explicit kube_api_url override.
func TestPluginData(t *testing.T) {
	f := newFixture(t, k8s.Options{})
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	ca := filepath.Join(dir, "ca.pem")
	tokFile := filepath.Join(dir, "token")
	for p, b := range map[string][]byte{kc: f.c.Kubeconfig(), ca: f.c.CAPEM(), tokFile: []byte(f.c.BearerToken() + "\n")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, conn := range map[string]string{
		"kube_config_file": `kube_config_file = "` + kc + `"`,
		"kube_api_url":     `kube_api_url = "` + f.c.URL() + `"  kube_ca_file = "` + ca + `"  kube_token_file = "` + tokFile + `"`,
	} {
		t.Run(name, func(t *testing.T) {
			p := parsePlugin(t, `plugins { NodeAttestor "k8s_psat" { plugin_data { clusters = { "prod" = {
				service_account_allow_list = ["spire:spire-agent"]
				allowed_node_label_keys = ["zone"]
				`+conn+` } } } } }`)
			var data k8spsat.PluginData
			if err := p.DecodeData(&data); err != nil {
				t.Fatal(err)
			}
			a, err := k8spsat.NewFromPluginData(td, data)
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.Attest(context.Background(), payload(t, "prod", f.token(t)), nil, noChallenge)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(res.AgentID.Path(), f.node.UID) {
				t.Fatalf("agent ID %s", res.AgentID)
			}
		})
	}
	// audience = [] leaves the audience to the API server: a token for
	// the API server's own audience is then accepted, one for
	// spire-server is not.
	p := parsePlugin(t, `plugins { NodeAttestor "k8s_psat" { plugin_data { clusters = { "prod" = {
		service_account_allow_list = ["spire:spire-agent"]  audience = []  kube_config_file = "`+kc+`" } } } } }`)
	var data k8spsat.PluginData
	if err := p.DecodeData(&data); err != nil {
		t.Fatal(err)
	}
	a, err := k8spsat.NewFromPluginData(td, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(context.Background(), payload(t, "prod", f.token(t, k8s.DefaultIssuer)), nil, noChallenge); err != nil {
		t.Errorf("API-server audience: %v", err)
	}
	if _, err := a.Attest(context.Background(), payload(t, "prod", f.token(t)), nil, noChallenge); status.Code(err) != codes.PermissionDenied {
		t.Errorf("spire-server audience with audience = []: %v", err)
	}

	bad := map[string]string{
		"no_allow_list":        `kube_config_file = "` + kc + `"`,
		"bad_allow_list_entry": `service_account_allow_list = ["spire-agent"] kube_config_file = "` + kc + `"`,
		"ca_without_url":       `service_account_allow_list = ["a:b"] kube_ca_file = "` + ca + `"`,
		"missing_kubeconfig":   `service_account_allow_list = ["a:b"] kube_config_file = "/nonexistent"`,
		"not_in_cluster":       `service_account_allow_list = ["a:b"]`,
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for name, body := range bad {
		t.Run(name, func(t *testing.T) {
			p := parsePlugin(t, `plugins { NodeAttestor "k8s_psat" { plugin_data { clusters = { "prod" = { `+body+` } } } } }`)
			var data k8spsat.PluginData
			if err := p.DecodeData(&data); err != nil {
				t.Fatal(err)
			}
			if _, err := k8spsat.NewFromPluginData(td, data); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := k8spsat.NewFromPluginData(td, k8spsat.PluginData{}); err == nil {
		t.Error("accepted a config without clusters")
	}
}

func TestKubeconfigRefusals(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"insecure":     "clusters: [{name: c, cluster: {server: 'https://x', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
		"exec":         "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
		"no_context":   "clusters: [{name: c, cluster: {server: 'https://x'}}]\ncurrent-context: x\n",
		"no_cluster":   "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
		"not_yaml":     "{{{",
		"bad_ca_data":  "clusters: [{name: c, cluster: {server: 'https://x', certificate-authority-data: '!!'}}]\ncontexts: [{name: x, context: {cluster: c}}]\n",
		"missing_file": "clusters: [{name: c, cluster: {server: 'https://x', certificate-authority: nope.pem}}]\ncontexts: [{name: x, context: {cluster: c}}]\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := k8spsat.LoadKubeconfig(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
