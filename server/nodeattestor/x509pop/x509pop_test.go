package x509pop_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// must returns v, failing the test (by panicking, which the test runner
// reports with a stack) on err; it keeps fixture setup to one line.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func data(t testing.TB, certs ...*x509.Certificate) []byte {
	var d x509pop.AttestationData
	for _, c := range certs {
		d.Certificates = append(d.Certificates, c.Raw)
	}
	return must(json.Marshal(d))
}

// sign answers a challenge as an honest agent holding key would, over the
// server nonce serverNonce (normally the challenge's own).
func sign(t testing.TB, key crypto.Signer, serverNonce []byte) []byte {
	t.Helper()
	own := make([]byte, x509pop.NonceSize)
	_, _ = rand.Read(own)
	d, err := x509pop.CombineNonces(serverNonce, own)
	if err != nil {
		t.Fatal(err)
	}
	var r x509pop.Response
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig := must(rsa.SignPSS(rand.Reader, k, crypto.SHA256, d, nil))
		r.RSASignature = &x509pop.RSAResponse{Nonce: own, Signature: sig}
	case *ecdsa.PrivateKey:
		rr, ss, err := ecdsa.Sign(rand.Reader, k, d)
		if err != nil {
			t.Fatal(err)
		}
		r.ECDSASignature = &x509pop.ECDSAResponse{Nonce: own, R: rr.Bytes(), S: ss.Bytes()}
	default:
		t.Fatalf("key %T", key)
	}
	return must(json.Marshal(r))
}

func nonceOf(t testing.TB, challenge []byte) []byte {
	t.Helper()
	var c x509pop.Challenge
	if err := json.Unmarshal(challenge, &c); err != nil {
		t.Fatal(err)
	}
	switch {
	case c.RSASignature != nil:
		return c.RSASignature.Nonce
	case c.ECDSASignature != nil:
		return c.ECDSASignature.Nonce
	}
	t.Fatalf("challenge %s", challenge)
	return nil
}

func honest(key crypto.Signer) func(testing.TB, []byte) []byte {
	return func(t testing.TB, c []byte) []byte { return sign(t, key, nonceOf(t, c)) }
}

type pki struct {
	root, inter, other *testpki.CA
	attestor           *x509pop.Attestor
}

func newPKI(t *testing.T) *pki {
	p := &pki{root: must(testpki.NewRoot("agents root"))}
	p.inter = must(p.root.Intermediate("agents issuing CA"))
	p.other = must(testpki.NewRoot("someone else's root"))
	roots := x509.NewCertPool()
	roots.AddCert(p.root.Cert)
	p.attestor = must(x509pop.New(x509pop.Config{TrustDomain: td, Roots: roots, MaxIntermediates: 1}))
	return p
}

func TestAttest(t *testing.T) {
	p := newPKI(t)
	for _, kt := range []string{"ecdsa", "rsa"} {
		t.Run(kt, func(t *testing.T) {
			san := must(url.Parse("x509pop://example.org/datacenter/us-east-1"))
			leaf, key := must2(p.inter.Issue(testpki.Leaf{CommonName: "node-7", KeyType: kt, URIs: []*url.URL{san}}))
			var sent int
			res, err := p.attestor.Attest(context.Background(), data(t, leaf, p.inter.Cert), nil, func(_ context.Context, c []byte) ([]byte, error) {
				sent++
				return honest(key)(t, c), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if sent != 1 || !res.CanReattest {
				t.Fatalf("challenges %d, result %+v", sent, res)
			}
			if want := "spiffe://example.org/spire/agent/x509pop/" + x509pop.Fingerprint(leaf); res.AgentID.String() != want {
				t.Fatalf("agent ID %s, want %s", res.AgentID, want)
			}
			var got []string
			for _, s := range res.Selectors {
				if s.Type != "x509pop" {
					t.Errorf("selector type %q", s.Type)
				}
				got = append(got, s.Value)
			}
			want := []string{
				"subject:cn:node-7",
				"ca:fingerprint:" + x509pop.Fingerprint(p.inter.Cert),
				"ca:fingerprint:" + x509pop.Fingerprint(p.root.Cert),
				"serialnumber:" + x509pop.SerialNumberHex(leaf.SerialNumber),
				"san:datacenter:us-east-1",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("selectors\n got %q\nwant %q", got, want)
			}
		})
	}
}

func must2(c *x509.Certificate, k crypto.Signer, err error) (*x509.Certificate, crypto.Signer) {
	if err != nil {
		panic(err)
	}
	return c, k
}

// TestAttacks: every refused attestation is a named row.
func TestAttacks(t *testing.T) {
	p := newPKI(t)
	leaf, key := must2(p.inter.Issue(testpki.Leaf{CommonName: "node"}))
	rsaLeaf, rsaKey := must2(p.inter.Issue(testpki.Leaf{CommonName: "node", KeyType: "rsa"}))
	foreign, foreignKey := must2(p.other.Issue(testpki.Leaf{CommonName: "node"}))
	inter2 := must(p.inter.Intermediate("second level"))
	deep, deepKey := must2(inter2.Issue(testpki.Leaf{CommonName: "deep"}))
	noDS, noDSKey := must2(p.inter.Issue(testpki.Leaf{KeyUsage: x509.KeyUsageKeyEncipherment}))
	expired, expiredKey := must2(p.inter.Issue(testpki.Leaf{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	edLeaf, _ := must2(p.inter.Issue(testpki.Leaf{KeyType: "ed25519"}))
	// A leaf used as a CA: signed by an end-entity certificate.
	fakeCA := &testpki.CA{Cert: leaf, Key: key}
	underLeaf, underLeafKey := must2(fakeCA.Issue(testpki.Leaf{CommonName: "under-leaf"}))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	// A response captured from an earlier, successful attestation.
	var captured []byte
	if _, err := p.attestor.Attest(context.Background(), data(t, leaf, p.inter.Cert), nil, func(_ context.Context, c []byte) ([]byte, error) {
		captured = honest(key)(t, c)
		return captured, nil
	}); err != nil {
		t.Fatal(err)
	}

	rows := []struct {
		name    string
		payload []byte
		answer  func(testing.TB, []byte) []byte
		code    codes.Code
		msg     string
	}{
		{"certificate_from_another_ca", data(t, foreign), honest(foreignKey), codes.PermissionDenied, "unknown authority"},
		{"another_ca_with_trusted_intermediate_sent", data(t, foreign, p.inter.Cert), honest(foreignKey), codes.PermissionDenied, "certificate chain"},
		{"too_many_intermediates", data(t, deep, inter2.Cert, p.inter.Cert), honest(deepKey), codes.InvalidArgument, "at most 1"},
		{"missing_intermediate", data(t, leaf), honest(key), codes.PermissionDenied, "certificate chain"},
		{"leaf_signed_by_leaf", data(t, underLeaf, leaf, p.inter.Cert), honest(underLeafKey), codes.InvalidArgument, "at most 1"},
		{"leaf_signed_by_leaf_within_limit", data(t, underLeaf, leaf), honest(underLeafKey), codes.PermissionDenied, "certificate chain"},
		{"no_digital_signature_usage", data(t, noDS, p.inter.Cert), honest(noDSKey), codes.PermissionDenied, "digitalSignature"},
		{"expired_certificate", data(t, expired, p.inter.Cert), honest(expiredKey), codes.PermissionDenied, "expired"},
		{"unsupported_key_type", data(t, edLeaf, p.inter.Cert), nil, codes.PermissionDenied, "unsupported key type"},
		{"signature_over_wrong_nonce", data(t, leaf, p.inter.Cert), func(t testing.TB, c []byte) []byte {
			n := slices.Clone(nonceOf(t, c))
			n[0] ^= 0xff
			return sign(t, key, n)
		}, codes.PermissionDenied, "does not verify"},
		{"replayed_response", data(t, leaf, p.inter.Cert), func(testing.TB, []byte) []byte { return captured }, codes.PermissionDenied, "does not verify"},
		{"signature_by_another_key", data(t, leaf, p.inter.Cert), honest(otherKey), codes.PermissionDenied, "does not verify"},
		{"rsa_signature_over_wrong_nonce", data(t, rsaLeaf, p.inter.Cert), func(t testing.TB, c []byte) []byte {
			return sign(t, rsaKey, make([]byte, x509pop.NonceSize))
		}, codes.PermissionDenied, "verification error"},
		{"ecdsa_answer_to_rsa_challenge", data(t, rsaLeaf, p.inter.Cert), honest(key), codes.PermissionDenied, "expected an RSA"},
		{"both_answers", data(t, leaf, p.inter.Cert), func(t testing.TB, c []byte) []byte {
			var r x509pop.Response
			_ = json.Unmarshal(honest(key)(t, c), &r)
			r.RSASignature = &x509pop.RSAResponse{}
			return must(json.Marshal(r))
		}, codes.PermissionDenied, "expected an ECDSA"},
		{"short_agent_nonce", data(t, leaf, p.inter.Cert), func(t testing.TB, c []byte) []byte {
			var r x509pop.Response
			_ = json.Unmarshal(honest(key)(t, c), &r)
			r.ECDSASignature.Nonce = r.ECDSASignature.Nonce[:8]
			return must(json.Marshal(r))
		}, codes.PermissionDenied, "nonces must be"},
		{"garbage_response", data(t, leaf, p.inter.Cert), func(testing.TB, []byte) []byte { return []byte("\xff{") }, codes.InvalidArgument, "challenge response"},
		{"oversized_response", data(t, leaf, p.inter.Cert), func(testing.TB, []byte) []byte { return make([]byte, x509pop.MaxResponse+1) }, codes.InvalidArgument, "larger"},
		{"garbage_payload", []byte("not json"), nil, codes.InvalidArgument, "attestation data"},
		{"garbage_certificate", []byte(`{"certificates":["AAEC"]}`), nil, codes.InvalidArgument, "certificate 0"},
		{"no_certificate", []byte(`{"certificates":[]}`), nil, codes.InvalidArgument, "no certificate"},
		{"oversized_payload", append([]byte(`{"certificates":["`), append(make([]byte, x509pop.MaxPayload), `"]}`...)...), nil, codes.InvalidArgument, "larger"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, err := p.attestor.Attest(context.Background(), r.payload, nil, func(_ context.Context, c []byte) ([]byte, error) {
				if r.answer == nil {
					t.Fatal("challenged evidence that should have been refused")
				}
				return r.answer(t, c), nil
			})
			if status.Code(err) != r.code || !strings.Contains(err.Error(), r.msg) {
				t.Fatalf("got %v, want %v containing %q", err, r.code, r.msg)
			}
		})
	}
}

func TestPluginDataAndTemplate(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, testpki.CertsPEM(p.root.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, key := must2(p.inter.Issue(testpki.Leaf{CommonName: "web-01"}))
	parse := func(body string) (*x509pop.Attestor, error) {
		d := hclconf.NewDiagnostics("test.conf")
		root := hclconf.Parse(d, []byte(`plugins { NodeAttestor "x509pop" { plugin_data { `+body+` } } }`), false)
		ps := hclconf.ParsePlugins(root, []hclconf.PluginRule{{Type: "NodeAttestor", Min: 1, Max: -1}})
		if err := d.Err(); err != nil {
			t.Fatal(err)
		}
		var data x509pop.PluginData
		if err := ps[0].DecodeData(&data); err != nil {
			return nil, err
		}
		return x509pop.NewFromPluginData(td, data)
	}
	attest := func(a *x509pop.Attestor) (string, error) {
		res, err := a.Attest(context.Background(), data(t, leaf, p.inter.Cert), nil, func(_ context.Context, c []byte) ([]byte, error) { return honest(key)(t, c), nil })
		if err != nil {
			return "", err
		}
		return res.AgentID.String(), nil
	}
	for body, want := range map[string]string{
		`ca_bundle_path = "` + bundle + `"`: "spiffe://example.org/spire/agent/x509pop/" + x509pop.Fingerprint(leaf),
		`ca_bundle_paths = ["` + bundle + `"] agent_path_template = "/cn/{{ .Subject.CommonName }}"`:     "spiffe://example.org/spire/agent/cn/web-01",
		`ca_bundle_path = "` + bundle + `" agent_path_template = "x/{{ .SerialNumberHex | upper }}"`:     "spiffe://example.org/spire/agent/x/" + strings.ToUpper(x509pop.SerialNumberHex(leaf.SerialNumber)),
		`ca_bundle_path = "` + bundle + `" agent_path_template = "{{ .PluginName }}/{{ .TrustDomain }}"`: "spiffe://example.org/spire/agent/x509pop/example.org",
		// SPIRE's template functions (agentpath), as its docs use them.
		`ca_bundle_path = "` + bundle + `" agent_path_template = "/{{ .Subject.CommonName | upper | replace \"-\" \"_\" }}/{{ .Fingerprint | trunc 8 }}"`: "spiffe://example.org/spire/agent/WEB_01/" + x509pop.Fingerprint(leaf)[:8],
	} {
		a, err := parse(body)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		got, err := attest(a)
		if err != nil || got != want {
			t.Errorf("%s: got %s %v, want %s", body, got, err, want)
		}
	}
	// Templates that render a bad path or name a missing key are refused
	// at attestation, not turned into odd IDs.
	for _, tmpl := range []string{"/{{ .Nope }}", "/../{{ .Fingerprint }}", "/a//b", "/{{ .Subject.CommonName }}/"} {
		a, err := parse(`ca_bundle_path = "` + bundle + `" agent_path_template = "` + tmpl + `"`)
		if err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		if _, err := attest(a); status.Code(err) != codes.PermissionDenied {
			t.Errorf("template %q: %v", tmpl, err)
		}
	}
	for _, body := range []string{``, `ca_bundle_path = "/nonexistent"`, `ca_bundle_path = "` + bundle + `" agent_path_template = "{{"`,
		`ca_bundle_path = "` + bundle + `" max_intermediates = -1`, `ca_bundle_path = "` + bundle + `" bogus = 1`} {
		if _, err := parse(body); err == nil {
			t.Errorf("accepted %s", body)
		}
	}
	// max_intermediates = 0 admits only leaves issued by a root.
	a, err := parse(`ca_bundle_path = "` + bundle + `" max_intermediates = 0`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest(a); status.Code(err) != codes.InvalidArgument {
		t.Errorf("an intermediate with max_intermediates = 0: %v", err)
	}
}
