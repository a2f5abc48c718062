package tpmdevid_test

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentdevid "github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpmdevid"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/tpmdevid"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/tpm"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// env is two swtpm TPMs, each with a DevID issued by one intermediate of
// one root, and the server's CA files.
type env struct {
	fleet         *swtpm.Fleet
	root, inter   *testpki.CA
	devids        []*swtpm.DevID
	devIDCA, ekCA string
	otherCA       string // a root that issued nothing here
	agents        []*agentdevid.Attestor
}

func newEnv(t *testing.T, keyType string) *env {
	t.Helper()
	f := swtpm.StartT(t, 2)
	root, err := testpki.NewRoot("devid root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("devid issuing")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewRoot("other root")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &env{fleet: f, root: root, inter: inter, ekCA: f.CABundle,
		devIDCA: filepath.Join(dir, "devid-ca.pem"), otherCA: filepath.Join(dir, "other-ca.pem")}
	for p, c := range map[string]*x509.Certificate{e.devIDCA: root.Cert, e.otherCA: other.Cert} {
		if err := os.WriteFile(p, testpki.CertsPEM(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, inst := range f.TPMs {
		d, err := f.ProvisionDevID(inst, swtpm.DevIDOptions{CA: inter, Intermediates: []*x509.Certificate{inter.Cert},
			KeyType: keyType, Password: "devid-pw", CommonName: "node-" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		e.devids = append(e.devids, d)
		e.agents = append(e.agents, e.agent(t, i, i))
	}
	return e
}

// agent returns the attestor of DevID dev on TPM tpmIdx.
func (e *env) agent(t *testing.T, dev, tpmIdx int) *agentdevid.Attestor {
	t.Helper()
	d := e.devids[dev]
	a, err := agentdevid.New(agentdevid.PluginData{DevIDCertPath: d.CertPath, DevIDPrivPath: d.PrivPath, DevIDPubPath: d.PubPath,
		DevIDPassword: "devid-pw", TPMDevicePath: e.fleet.TPMs[tpmIdx].Path})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (e *env) server(t *testing.T, devIDCA, ekCA string) *tpmdevid.Attestor {
	t.Helper()
	s, err := tpmdevid.NewFromPluginData(td, tpmdevid.PluginData{DevIDCAPath: devIDCA, EndorsementCAPath: ekCA})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tamper changes the exchange: the payload the server gets, the challenge
// the agent gets, the answer the server gets.
type tamper struct {
	payload   func([]byte) []byte
	challenge func([]byte) []byte
	answer    func([]byte) []byte
}

func attest(t *testing.T, s nodeattestor.Attestor, a *agentdevid.Attestor, tm tamper) (*nodeattestor.Result, error) {
	t.Helper()
	ctx := context.Background()
	payload, err := a.AttestationData(ctx, nil)
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	if tm.payload != nil {
		payload = tm.payload(payload)
	}
	return s.Attest(ctx, payload, nil, func(ctx context.Context, ch []byte) ([]byte, error) {
		if tm.challenge != nil {
			ch = tm.challenge(ch)
		}
		ans, err := a.Respond(ctx, ch)
		if err != nil {
			return nil, err
		}
		if tm.answer != nil {
			ans = tm.answer(ans)
		}
		return ans, nil
	})
}

// editPayload decodes, changes and re-encodes an attestation payload.
func editPayload(t *testing.T, fn func(*tpm.DevIDAttestation)) func([]byte) []byte {
	return func(b []byte) []byte {
		var d tpm.DevIDAttestation
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		fn(&d)
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func payloadOf(t *testing.T, a *agentdevid.Attestor) *tpm.DevIDAttestation {
	t.Helper()
	b, err := a.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tpm.ParseDevIDAttestation(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x01
	return c
}

// setAttr sets or clears TPMA_OBJECT bits of a TPMT_PUBLIC (type, nameAlg,
// then the 32-bit attributes).
func setAttr(pub []byte, set, clear uint32) []byte {
	c := append([]byte(nil), pub...)
	v := binary.BigEndian.Uint32(c[4:8])
	binary.BigEndian.PutUint32(c[4:8], (v|set)&^clear)
	return c
}

func TestAttest(t *testing.T) {
	for _, kt := range []string{"rsa", "ecc"} {
		t.Run(kt, func(t *testing.T) {
			e := newEnv(t, kt)
			s := e.server(t, e.devIDCA, e.ekCA)
			res, err := attest(t, s, e.agents[0], tamper{})
			if err != nil {
				t.Fatal(err)
			}
			leaf := e.devids[0].Cert
			if want := "spiffe://example.org/spire/agent/tpm_devid/" + tpmdevid.Fingerprint(leaf); res.AgentID.String() != want {
				t.Errorf("agent ID %s, want %s", res.AgentID, want)
			}
			if !res.CanReattest {
				t.Error("CanReattest is false")
			}
			var got []string
			for _, sel := range res.Selectors {
				got = append(got, sel.Type+":"+sel.Value)
			}
			want := []string{"tpm_devid:subject:cn:node-a", "tpm_devid:issuer:cn:devid issuing",
				"tpm_devid:ca:fingerprint:" + tpmdevid.Fingerprint(e.inter.Cert),
				"tpm_devid:ca:fingerprint:" + tpmdevid.Fingerprint(e.root.Cert)}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("selectors %v, want %v", got, want)
			}
			// Both TPMs attest with their own DevID, on the same server.
			if res2, err := attest(t, s, e.agents[1], tamper{}); err != nil || res2.AgentID == res.AgentID {
				t.Errorf("second node: %v, %v", res2, err)
			}
		})
	}
}

// TestRefusals: each attack a row, each refused with its reason.
func TestRefusals(t *testing.T) {
	e := newEnv(t, "rsa")
	good := e.server(t, e.devIDCA, e.ekCA)
	other := payloadOf(t, e.agents[1]) // TPM 1's honest evidence, for substitutions

	var replayed []byte
	if _, err := attest(t, good, e.agents[0], tamper{answer: func(b []byte) []byte { replayed = b; return b }}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		server *tpmdevid.Attestor
		tm     tamper
		want   string
		// agentErr: the agent's TPM cannot answer, which ends the
		// attestation on the agent's side.
		agentErr bool
	}{
		{name: "WrongDevIDCA", server: e.server(t, e.otherCA, e.ekCA), want: "unable to verify DevID certificate"},
		{name: "WrongEKCA", server: e.server(t, e.devIDCA, e.otherCA), want: "verify EK certificate"},
		{name: "TamperedCertify", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.CertifiedDevID = flip(d.CertifiedDevID, len(d.CertifiedDevID)-40)
		})}, want: "not signed by the AK"},
		{name: "TamperedCertifySignature", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.CertificationSignature = flip(d.CertificationSignature, len(d.CertificationSignature)-1)
		})}, want: "not signed by the AK"},
		// TPM 1 certifies its own DevID key; the payload claims TPM 0's.
		{name: "CertifyOfAnotherKey", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.EKCert, d.EKPub, d.AKPub, d.CertifiedDevID, d.CertificationSignature = other.EKCert, other.EKPub, other.AKPub, other.CertifiedDevID, other.CertificationSignature
		})}, want: "names another key"},
		// TPM 1's DevID key, certified by TPM 1, presented with TPM 0's certificate.
		{name: "DevIDKeyOfAnotherTPM", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.DevIDPub, d.EKCert, d.EKPub, d.AKPub, d.CertifiedDevID, d.CertificationSignature = other.DevIDPub, other.EKCert, other.EKPub, other.AKPub, other.CertifiedDevID, other.CertificationSignature
		})}, want: "not the key of the DevID certificate"},
		// TPM 0's evidence with TPM 1's EK: the credential is for a TPM
		// the agent does not have, so TPM 0 cannot release it.
		{name: "EKOfAnotherTPM", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.EKCert, d.EKPub = other.EKCert, other.EKPub
		})}, want: "activate credential", agentErr: true},
		{name: "EKPublicNotTheCertificates", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.EKPub = other.EKPub
		})}, want: "not the default EK"},
		{name: "UnrestrictedAK", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.AKPub = setAttr(d.AKPub, 0, 1<<16)
		})}, want: "restricted signing key"},
		{name: "DuplicableDevID", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.DevIDPub = setAttr(d.DevIDPub, 0, 1<<1)
		})}, want: "fixedTPM clear"},
		{name: "MissingCertification", tm: tamper{payload: editPayload(t, func(d *tpm.DevIDAttestation) {
			d.CertifiedDevID = nil
		})}, want: "missing certification"},
		{name: "WrongNonceSigned", tm: tamper{challenge: func(b []byte) []byte {
			var c tpm.DevIDChallenge
			_ = json.Unmarshal(b, &c)
			c.DevID = flip(c.DevID, 0)
			out, _ := json.Marshal(c)
			return out
		}}, want: "proof of possession"},
		{name: "ReplayedAnswer", tm: tamper{answer: func([]byte) []byte { return replayed }}, want: "proof of possession"},
		{name: "WrongSecret", tm: tamper{answer: func(b []byte) []byte {
			var r tpm.DevIDChallengeResponse
			_ = json.Unmarshal(b, &r)
			r.CredActivation = flip(r.CredActivation, 0)
			out, _ := json.Marshal(r)
			return out
		}}, want: "credential activation"},
		{name: "GarbageAnswer", tm: tamper{answer: func([]byte) []byte { return []byte("{") }}, want: "challenge response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.server
			if s == nil {
				s = good
			}
			res, err := attest(t, s, e.agents[0], tc.tm)
			if err == nil {
				t.Fatalf("accepted: %s", res.AgentID)
			}
			if c := status.Code(err); !tc.agentErr && c != codes.PermissionDenied && c != codes.InvalidArgument {
				t.Errorf("code %v, want PermissionDenied or InvalidArgument", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestDevIDOfAnotherTPM: an agent given TPM 0's blobs on TPM 1 cannot even
// load the key, so it produces no evidence.
func TestDevIDOfAnotherTPM(t *testing.T) {
	e := newEnv(t, "rsa")
	_, err := e.agent(t, 0, 1).AttestationData(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "load DevID key") {
		t.Fatalf("blobs of TPM 0 on TPM 1: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    tpmdevid.PluginData
		want string
	}{
		{"NoDevIDCA", tpmdevid.PluginData{EndorsementCAPath: "x"}, "devid_ca_path is required"},
		{"NoEKCA", tpmdevid.PluginData{DevIDCAPath: "x"}, "endorsement_ca_path is required"},
		{"MissingFile", tpmdevid.PluginData{DevIDCAPath: "/nonexistent", EndorsementCAPath: "/nonexistent"}, "unable to load DevID trust bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tpmdevid.NewFromPluginData(td, tc.d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := tpmdevid.New(tpmdevid.Config{TrustDomain: td}); err == nil {
		t.Fatal("config without roots accepted")
	}
}
