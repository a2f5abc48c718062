package awsiid

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	agentaws "github.com/spiffe-hw/spire-hw/agent/nodeattestor/awsiid"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/sim/cloud"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func startSim(t *testing.T, cfg cloud.AWSConfig) *cloud.AWS {
	t.Helper()
	s, err := cloud.StartAWS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newAttestor(t *testing.T, s *cloud.AWS, nodes NodeLookup, mod func(*Config)) *Attestor {
	t.Helper()
	c, err := parseCertPEM(s.Signer().CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		TrustDomain: td, RegionCerts: map[string]*x509.Certificate{s.Signer().Region: c},
		Credentials: Credentials{AccessKeyID: s.AccessKeyID(), SecretAccessKey: "sim-secret"},
		EC2Endpoint: s.EC2Endpoint(), IAMEndpoint: s.IAMEndpoint(), Nodes: nodes,
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

func collect(t *testing.T, s *cloud.AWS) []byte {
	t.Helper()
	ag, err := agentaws.New(agentaws.PluginData{EC2MetadataEndpoint: s.IMDSEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ag.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEndToEnd runs the agent collector against the simulated IMDS (over
// IMDSv2), verifies the payload on the server with the EC2 and IAM APIs
// of the simulator, then shows the first-use rule and eviction.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	s := startSim(t, cloud.AWSConfig{})
	st := sqlitetest.Open(t)
	a := newAttestor(t, s, st, nil)
	payload := collect(t, s)
	if s.TokenRequests() == 0 {
		t.Fatal("agent did not use an IMDSv2 session token")
	}
	res, err := a.Attest(ctx, payload, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/spire/agent/aws_iid/123456789012/us-east-1/i-0b22a22eec53b9321"; res.AgentID.String() != want {
		t.Fatalf("agent ID %s, want %s", res.AgentID, want)
	}
	if res.CanReattest {
		t.Fatal("aws_iid must not allow re-attestation")
	}
	var got []string
	for _, sel := range res.Selectors {
		if sel.Type != "aws_iid" {
			t.Fatalf("selector type %q", sel.Type)
		}
		got = append(got, sel.Value)
	}
	want := []string{
		"account_id:123456789012", "az:us-east-1a", "iamrole:arn:aws:iam::123456789012:role/Blog",
		"image:id:ami-5fb8c835", "instance:id:i-0b22a22eec53b9321", "region:us-east-1",
		"sg:id:sg-01234567", "sg:name:blog", "tag:Name:blog", "tag:env:prod",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("selectors\n%q\nwant\n%q", got, want)
	}

	// The server records the node after a successful attestation.
	node := &datastore.AttestedNode{SPIFFEID: res.AgentID.String(), AttestationType: PluginName, CertSerial: "1", CertNotAfter: time.Now().Add(time.Hour).Unix()}
	if err := st.CreateAttestedNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	_, err = a.Attest(ctx, payload, nil, nil)
	wantErr(t, err, codes.PermissionDenied, "already used to attest an agent; evict it first")
	if _, err := st.DeleteAttestedNode(ctx, res.AgentID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(ctx, payload, nil, nil); err != nil {
		t.Fatalf("after eviction: %v", err)
	}
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

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttacks: each row is a forged or malformed payload the server must
// refuse, with the error it must give.
func TestAttacks(t *testing.T) {
	ctx := context.Background()
	s := startSim(t, cloud.AWSConfig{})
	west, err := cloud.NewAWSSigner("us-west-2")
	if err != nil {
		t.Fatal(err)
	}
	westCert, _ := parseCertPEM(west.CertPEM())
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.RegionCerts["us-west-2"] = westCert })
	var genuine payload
	if err := json.Unmarshal(collect(t, s), &genuine); err != nil {
		t.Fatal(err)
	}
	doc := genuine.Document

	signedByWest, err := west.Sign([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(doc, "i-0b22a22eec53b9321", "i-0aaaaaaaaaaaaaaaa", 1)
	fakeRegion := strings.Replace(doc, `"us-east-1"`, `"xx-fake-1"`, 1)
	fakeRegionSig, _ := west.Sign([]byte(fakeRegion))
	// An attacker signing an edited document with a key of its own,
	// presenting it as the region's.
	rogue, _ := cloud.NewAWSSigner("us-east-1")
	rogueSig, _ := rogue.Sign([]byte(edited))

	for _, tc := range []struct {
		name    string
		payload []byte
		code    codes.Code
		err     string
	}{
		{"signed by another region's key", mustJSON(t, payload{Document: doc, SignatureRSA2048: signedByWest}), codes.PermissionDenied, "does not verify with the us-east-1 certificate"},
		{"genuine signature, edited document", mustJSON(t, payload{Document: edited, SignatureRSA2048: genuine.SignatureRSA2048}), codes.PermissionDenied, "the signed content is not the identity document"},
		{"rogue key claiming the region", mustJSON(t, payload{Document: edited, SignatureRSA2048: rogueSig}), codes.PermissionDenied, "does not verify"},
		{"region without certificate", mustJSON(t, payload{Document: fakeRegion, SignatureRSA2048: fakeRegionSig}), codes.PermissionDenied, `no certificate for region "xx-fake-1"`},
		{"whitespace added to document", mustJSON(t, payload{Document: doc + "\n", SignatureRSA2048: genuine.SignatureRSA2048}), codes.PermissionDenied, "the signed content is not the identity document"},
		{"no rsa2048 signature", mustJSON(t, payload{Document: doc, Signature: genuine.SignatureRSA2048}), codes.InvalidArgument, "no RSA-2048 signature"},
		{"signature not base64", mustJSON(t, payload{Document: doc, SignatureRSA2048: "%%%"}), codes.InvalidArgument, "malformed signature"},
		{"signature not PKCS#7", mustJSON(t, payload{Document: doc, SignatureRSA2048: "AAAA"}), codes.InvalidArgument, "malformed signature"},
		{"garbage payload", []byte("\x00\xffnot json"), codes.InvalidArgument, "malformed payload"},
		{"document not JSON", mustJSON(t, payload{Document: "garbage", SignatureRSA2048: genuine.SignatureRSA2048}), codes.InvalidArgument, "malformed identity document"},
		{"document without instance", mustJSON(t, payload{Document: `{"accountId":"1","region":"us-east-1","availabilityZone":"a","imageId":"i"}`, SignatureRSA2048: genuine.SignatureRSA2048}), codes.InvalidArgument, "no instanceId"},
		{"oversized payload", append([]byte(`{"document":"`), make([]byte, MaxPayloadSize)...), codes.InvalidArgument, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Attest(ctx, tc.payload, nil, nil)
			wantErr(t, err, tc.code, tc.err)
		})
	}
}

// TestBlockDevice: a root volume attached an hour after the network
// interface was swapped in; the attestor refuses it unless
// skip_block_device is set.
func TestBlockDevice(t *testing.T) {
	ctx := context.Background()
	inst := cloud.DefaultAWSInstance()
	inst.RootAttachTime = inst.Document.PendingTime.Add(time.Hour)
	s := startSim(t, cloud.AWSConfig{Instance: &inst})
	payload := collect(t, s)

	_, err := newAttestor(t, s, sqlitetest.Open(t), nil).Attest(ctx, payload, nil, nil)
	wantErr(t, err, codes.PermissionDenied, "root volume and network interface 0 were attached 1h0m0s apart")
	if _, err := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.SkipBlockDevice = true }).Attest(ctx, payload, nil, nil); err != nil {
		t.Fatalf("skip_block_device: %v", err)
	}
	if _, err := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.LocalValidAccountIDs = []string{"123456789012"} }).Attest(ctx, payload, nil, nil); err != nil {
		t.Fatalf("account_ids_for_local_validation: %v", err)
	}
	inst.RootDeviceType = "instance-store"
	s2 := startSim(t, cloud.AWSConfig{Instance: &inst})
	if _, err := newAttestor(t, s2, sqlitetest.Open(t), nil).Attest(ctx, collect(t, s2), nil, nil); err != nil {
		t.Fatalf("instance-store root: %v", err)
	}
}

func TestAgentPathTemplate(t *testing.T) {
	s := startSim(t, cloud.AWSConfig{})
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		c.AgentPathTemplate = "/{{ .PluginName }}/{{ .Tags.Name }}/{{ .InstanceID }}"
		c.DisableInstanceProfileSelectors = true
	})
	res, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/spire/agent/aws_iid/blog/i-0b22a22eec53b9321"; res.AgentID.String() != want {
		t.Fatalf("agent ID %s, want %s", res.AgentID, want)
	}
	for _, sel := range res.Selectors {
		if strings.HasPrefix(sel.Value, "iamrole:") {
			t.Fatalf("iamrole selector with disable_instance_profile_selectors: %s", sel.Value)
		}
	}
	// SPIRE's template functions (agentpath) work here too.
	fa := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) {
		c.AgentPathTemplate = `/{{ .PluginName }}/{{ .Region | upper }}/{{ .InstanceID | trimPrefix "i-" | trunc 6 }}`
	})
	res, err = fa.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/spire/agent/aws_iid/US-EAST-1/0b22a2"; res.AgentID.Path() != want {
		t.Fatalf("agent ID %s, want path %s", res.AgentID, want)
	}
	// A tag value that would escape its path segment is refused.
	bad := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.AgentPathTemplate = "/{{ .Tags.Name }}/../x" })
	_, err = bad.Attest(context.Background(), collect(t, s), nil, nil)
	wantErr(t, err, codes.PermissionDenied, "agent path")
}

func TestIMDSv1Fallback(t *testing.T) {
	s := startSim(t, cloud.AWSConfig{AllowIMDSv1: true})
	ag, err := agentaws.New(agentaws.PluginData{EC2MetadataEndpoint: s.IMDSEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.AttestationData(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestWrongAPICredentials(t *testing.T) {
	s := startSim(t, cloud.AWSConfig{})
	a := newAttestor(t, s, sqlitetest.Open(t), func(c *Config) { c.Credentials.AccessKeyID = "AKIDOTHER" })
	_, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	wantErr(t, err, codes.Internal, "AuthFailure")
}

func TestPluginData(t *testing.T) {
	s := startSim(t, cloud.AWSConfig{})
	certPath := filepath.Join(t.TempDir(), "us-east-1.pem")
	if err := os.WriteFile(certPath, s.Signer().CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	text := `plugins {
  NodeAttestor "aws_iid" {
    plugin_data {
      access_key_id = "` + s.AccessKeyID() + `"
      secret_access_key = "x"
      ec2_endpoint = "` + s.EC2Endpoint() + `"
      iam_endpoint = "` + s.IAMEndpoint() + `"
      region_certificates = { "us-east-1" = "` + certPath + `" }
      agent_path_template = "/{{ .PluginName }}/{{ .InstanceID }}"
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
	if len(a.cfg.RegionCerts) < 30 {
		t.Fatalf("only %d region certificates; the built-in ones are missing", len(a.cfg.RegionCerts))
	}
	res, err := a.Attest(context.Background(), collect(t, s), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.Path() != "/spire/agent/aws_iid/i-0b22a22eec53b9321" {
		t.Fatalf("agent ID %s", res.AgentID)
	}
}

func TestBuiltinRegionCertificates(t *testing.T) {
	certs, err := BuiltinRegionCertificates()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1"} {
		c := certs[r]
		if c == nil {
			t.Fatalf("no certificate for %s", r)
		}
		if c.Subject.Organization[0] != "Amazon Web Services LLC" {
			t.Fatalf("%s: subject %s", r, c.Subject)
		}
	}
}
