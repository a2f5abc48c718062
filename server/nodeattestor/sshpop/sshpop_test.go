package sshpop_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/sshpop"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type certOpts struct {
	typ        uint32
	principals []string
	after      time.Time
	before     time.Time
	critical   map[string]string
}

func issue(t testing.TB, ca ssh.Signer, host ssh.PublicKey, o certOpts) *ssh.Certificate {
	t.Helper()
	if o.typ == 0 {
		o.typ = ssh.HostCert
	}
	if o.principals == nil {
		o.principals = []string{"web-01.example.com"}
	}
	if o.after.IsZero() {
		o.after = time.Now().Add(-time.Minute)
	}
	if o.before.IsZero() {
		o.before = time.Now().Add(time.Hour)
	}
	c := &ssh.Certificate{
		Key: host, Serial: 7, CertType: o.typ, KeyId: "web-01", ValidPrincipals: o.principals,
		ValidAfter: uint64(o.after.Unix()), ValidBefore: uint64(o.before.Unix()),
		Permissions: ssh.Permissions{CriticalOptions: o.critical},
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func data(t testing.TB, c *ssh.Certificate) []byte {
	b, err := json.Marshal(sshpop.AttestationData{Certificate: c.Marshal()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answer signs the challenge's nonce (or serverNonce when not nil) with
// key, as an agent would.
func answer(t testing.TB, key ssh.Signer, challenge, serverNonce []byte) []byte {
	t.Helper()
	var ch sshpop.Challenge
	if err := json.Unmarshal(challenge, &ch); err != nil {
		t.Fatal(err)
	}
	if serverNonce == nil {
		serverNonce = ch.Nonce
	}
	own := make([]byte, sshpop.NonceSize)
	_, _ = rand.Read(own)
	sum := sha256.Sum256(append(append([]byte(nil), serverNonce...), own...))
	sig, err := key.Sign(rand.Reader, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sshpop.Response{Nonce: own, Signature: sig})
	return b
}

func honest(key ssh.Signer) func(testing.TB, []byte) []byte {
	return func(t testing.TB, c []byte) []byte { return answer(t, key, c, nil) }
}

func TestAttest(t *testing.T) {
	ca, host := newSigner(t), newSigner(t)
	cert := issue(t, ca, host.PublicKey(), certOpts{})
	a, err := sshpop.New(sshpop.Config{TrustDomain: td, Authorities: []ssh.PublicKey{ca.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Attest(context.Background(), data(t, cert), nil, func(_ context.Context, c []byte) ([]byte, error) { return honest(host)(t, c), nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/spire/agent/sshpop/" + sshpop.Fingerprint(cert); res.AgentID.String() != want || !res.CanReattest {
		t.Fatalf("agent ID %s (want %s), reattest %v", res.AgentID, want, res.CanReattest)
	}
	if len(sshpop.Fingerprint(cert)) != 43 || strings.ContainsAny(sshpop.Fingerprint(cert), "+/=") {
		t.Fatalf("fingerprint %q is not unpadded URL-safe base64 of SHA-256", sshpop.Fingerprint(cert))
	}
}

// TestAttacks: every refused attestation is a named row.
func TestAttacks(t *testing.T) {
	ca, other, host, stranger := newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	good := issue(t, ca, host.PublicKey(), certOpts{})
	a, err := sshpop.New(sshpop.Config{TrustDomain: td, Authorities: []ssh.PublicKey{ca.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	canon, err := sshpop.New(sshpop.Config{TrustDomain: td, Authorities: []ssh.PublicKey{ca.PublicKey()}, CanonicalDomain: "corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	tampered := issue(t, ca, host.PublicKey(), certOpts{})
	tampered.ValidPrincipals = []string{"db-01.example.com"}
	var captured []byte
	if _, err := a.Attest(context.Background(), data(t, good), nil, func(_ context.Context, c []byte) ([]byte, error) {
		captured = honest(host)(t, c)
		return captured, nil
	}); err != nil {
		t.Fatal(err)
	}
	plainKey, _ := json.Marshal(sshpop.AttestationData{Certificate: host.PublicKey().Marshal()})

	rows := []struct {
		name     string
		attestor *sshpop.Attestor
		payload  []byte
		answer   func(testing.TB, []byte) []byte
		code     codes.Code
		msg      string
	}{
		{"certificate_from_another_ca", a, data(t, issue(t, other, host.PublicKey(), certOpts{})), honest(host), codes.PermissionDenied, "no authorities"},
		{"user_certificate", a, data(t, issue(t, ca, host.PublicKey(), certOpts{typ: ssh.UserCert})), honest(host), codes.PermissionDenied, "host certificate"},
		{"expired_certificate", a, data(t, issue(t, ca, host.PublicKey(), certOpts{after: time.Now().Add(-2 * time.Hour), before: time.Now().Add(-time.Hour)})), honest(host), codes.PermissionDenied, "expired"},
		{"not_yet_valid_certificate", a, data(t, issue(t, ca, host.PublicKey(), certOpts{after: time.Now().Add(time.Hour), before: time.Now().Add(2 * time.Hour)})), honest(host), codes.PermissionDenied, "not yet valid"},
		{"unsupported_critical_option", a, data(t, issue(t, ca, host.PublicKey(), certOpts{critical: map[string]string{"force-command": "/bin/true"}})), honest(host), codes.PermissionDenied, "critical option"},
		{"tampered_certificate", a, data(t, tampered), honest(host), codes.PermissionDenied, "signature"},
		{"principal_outside_canonical_domain", canon, data(t, good), honest(host), codes.PermissionDenied, "not in domain"},
		{"no_principals", a, data(t, issue(t, ca, host.PublicKey(), certOpts{principals: []string{}})), nil, codes.InvalidArgument, "no valid principals"},
		{"plain_key_not_certificate", a, plainKey, nil, codes.InvalidArgument, "not a certificate"},
		{"signature_over_wrong_nonce", a, data(t, good), func(t testing.TB, c []byte) []byte { return answer(t, host, c, make([]byte, sshpop.NonceSize)) }, codes.PermissionDenied, "proof of possession"},
		{"replayed_response", a, data(t, good), func(testing.TB, []byte) []byte { return captured }, codes.PermissionDenied, "proof of possession"},
		{"signature_by_another_key", a, data(t, good), honest(stranger), codes.PermissionDenied, "proof of possession"},
		{"short_agent_nonce", a, data(t, good), func(t testing.TB, c []byte) []byte {
			var r sshpop.Response
			_ = json.Unmarshal(honest(host)(t, c), &r)
			r.Nonce = r.Nonce[:4]
			b, _ := json.Marshal(r)
			return b
		}, codes.PermissionDenied, "nonces must be"},
		{"missing_signature", a, data(t, good), func(testing.TB, []byte) []byte { return []byte(`{"Nonce":"AA=="}`) }, codes.InvalidArgument, "no signature"},
		{"garbage_response", a, data(t, good), func(testing.TB, []byte) []byte { return []byte("]") }, codes.InvalidArgument, "challenge response"},
		{"oversized_response", a, data(t, good), func(testing.TB, []byte) []byte { return make([]byte, sshpop.MaxResponse+1) }, codes.InvalidArgument, "larger"},
		{"garbage_payload", a, []byte("\x00"), nil, codes.InvalidArgument, "attestation data"},
		{"garbage_certificate", a, []byte(`{"Certificate":"AAAAB3NzaA=="}`), nil, codes.InvalidArgument, "certificate"},
		{"oversized_payload", a, make([]byte, sshpop.MaxPayload+1), nil, codes.InvalidArgument, "larger"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, err := r.attestor.Attest(context.Background(), r.payload, nil, func(_ context.Context, c []byte) ([]byte, error) {
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
	ca1, ca2, host := newSigner(t), newSigner(t), newSigner(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "cas.pub")
	if err := os.WriteFile(caFile, append([]byte("# host CAs\n\n"), ssh.MarshalAuthorizedKey(ca2.PublicKey())...), 0o600); err != nil {
		t.Fatal(err)
	}
	inline := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca1.PublicKey())))
	parse := func(body string) (*sshpop.Attestor, error) {
		d := hclconf.NewDiagnostics("test.conf")
		root := hclconf.Parse(d, []byte(`plugins { NodeAttestor "sshpop" { plugin_data { `+body+` } } }`), false)
		ps := hclconf.ParsePlugins(root, []hclconf.PluginRule{{Type: "NodeAttestor", Min: 1, Max: -1}})
		if err := d.Err(); err != nil {
			t.Fatal(err)
		}
		var data sshpop.PluginData
		if err := ps[0].DecodeData(&data); err != nil {
			return nil, err
		}
		return sshpop.NewFromPluginData(td, data)
	}
	a, err := parse(`cert_authorities = ["` + inline + `"] cert_authorities_path = "` + caFile + `"
		canonical_domain = "example.com" agent_path_template = "static/{{ .Hostname }}/{{ index .ValidPrincipals 0 }}"`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ca := range []ssh.Signer{ca1, ca2} {
		cert := issue(t, ca, host.PublicKey(), certOpts{})
		res, err := a.Attest(context.Background(), data(t, cert), nil, func(_ context.Context, c []byte) ([]byte, error) { return honest(host)(t, c), nil })
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.AgentID.String())
	}
	if want := "spiffe://example.org/spire/agent/static/web-01/web-01.example.com"; !slices.Equal(ids, []string{want, want}) {
		t.Fatalf("agent IDs %q, want both %s", ids, want)
	}
	// SPIRE's template functions (agentpath).
	fa, err := parse(`cert_authorities = ["` + inline + `"] canonical_domain = "example.com"
		agent_path_template = "{{ .PluginName }}/{{ index .ValidPrincipals 0 | splitList \".\" | first | upper }}/{{ .Fingerprint | sha256sum | trunc 6 }}"`)
	if err != nil {
		t.Fatal(err)
	}
	cert := issue(t, ca1, host.PublicKey(), certOpts{})
	res, err := fa.Attest(context.Background(), data(t, cert), nil, func(_ context.Context, c []byte) ([]byte, error) { return honest(host)(t, c), nil })
	if err != nil {
		t.Fatal(err)
	}
	if p := strings.Split(res.AgentID.Path(), "/"); len(p) != 6 || p[3] != "sshpop" || p[4] != "WEB-01" || len(p[5]) != 6 {
		t.Fatalf("agent ID %s, want /spire/agent/sshpop/WEB-01/<6 hex digits>", res.AgentID)
	}
	for _, body := range []string{``, `cert_authorities = ["not a key"]`, `cert_authorities_path = "/nonexistent"`,
		`cert_authorities = ["` + inline + `"] agent_path_template = "{{ .Nope"`, `cert_authorities = ["` + inline + `"] verify = true`} {
		if _, err := parse(body); err == nil {
			t.Errorf("accepted %s", body)
		}
	}
}
