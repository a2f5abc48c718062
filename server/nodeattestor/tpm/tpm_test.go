package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// node is one simulated machine: an open TPM, its EK and AK, and the
// agent's CSR (DER, parsed as the server's API hands it to Attest, and the
// PKIX DER of its key).
type node struct {
	t         *tpm.TPM
	ek        *tpm.EK
	ak        *tpm.AK
	csr       []byte
	req       *x509.CertificateRequest
	csrKeyDER []byte
}

func parseCSR(t testing.TB, der []byte) *x509.CertificateRequest {
	t.Helper()
	r, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newCSR(t testing.TB) ([]byte, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return csr, der
}

func openNode(t testing.TB, path, alg string) *node {
	t.Helper()
	tp, err := tpm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(tpm.WithEKAlgorithm(alg))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	csr, der := newCSR(t)
	n := &node{t: tp, ek: ek, ak: ak, csr: csr, req: parseCSR(t, csr), csrKeyDER: der}
	t.Cleanup(func() { ak.Close(); tp.Close() })
	return n
}

func (n *node) data() tpm.AttestationData {
	return tpm.AttestationData{EKCert: n.ek.Certificate, EKPublic: n.ek.Public, AK: n.ak.Params(), CSR: n.csr}
}

// answer is the honest response of n to c.
func (n *node) answer(t testing.TB, c *tpm.Challenge) *tpm.ChallengeResponse {
	t.Helper()
	secret, err := n.t.ActivateCredential(n.ak, n.ek, c.Credential)
	if err != nil {
		// An attacker who cannot activate still answers something.
		secret = make([]byte, 32)
	}
	q, err := n.t.Quote(n.ak, tpm.QualifyingData(c.Nonce, n.csrKeyDER), c.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	return &tpm.ChallengeResponse{Secret: secret, Nonce: c.Nonce, Quote: *q}
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nodes is an in-memory NodeLookup: the selectors stored per agent ID, as
// server/api stores them after Attest.
type nodes struct {
	mu sync.Mutex
	m  map[string][]*types.Selector
}

func (s *nodes) GetNodeSelectors(_ context.Context, id string) ([]*types.Selector, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id], nil
}

func (s *nodes) set(id string, sels []*types.Selector) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[id] = sels
}

type fixture struct {
	fleet   *swtpm.Fleet
	roots   *tpm.EKRoots
	a, b    *node
	aECC    *node
	bootLog []byte
}

func setup(t *testing.T) *fixture {
	fleet := swtpm.StartT(t, 2)
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{fleet: fleet, roots: roots}
	f.a = openNode(t, fleet.TPMs[0].Path, "rsa")
	f.b = openNode(t, fleet.TPMs[1].Path, "rsa")
	f.aECC = &node{t: f.a.t, ek: mustEK(t, f.a.t, "ecc"), ak: f.a.ak, csr: f.a.csr, req: f.a.req, csrKeyDER: f.a.csrKeyDER}
	if f.bootLog, err = swtpm.MeasureBoot(f.a.t, swtpm.Boot(false)); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustEK(t testing.TB, tp *tpm.TPM, alg string) *tpm.EK {
	ek, err := tp.EK(tpm.WithEKAlgorithm(alg))
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

func selectorSet(sels []*types.Selector) map[string]bool {
	m := map[string]bool{}
	for _, s := range sels {
		m[s.Type+":"+s.Value] = true
	}
	return m
}

func TestAttestHonest(t *testing.T) {
	f := setup(t)
	for name, n := range map[string]*node{"rsa": f.a, "ecc": f.aECC} {
		t.Run(name, func(t *testing.T) {
			a, err := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: f.roots, RequireEventLog: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.Attest(context.Background(), mustJSON(t, n.data()), n.req, func(_ context.Context, c []byte) ([]byte, error) {
				ch, err := tpm.ParseChallenge(c)
				if err != nil {
					return nil, err
				}
				r := n.answer(t, ch)
				r.EventLog = f.bootLog
				return mustJSON(t, r), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ekHash, _ := tpm.EKHash(n.ek.PublicKey())
			if want := "spiffe://example.org/spire/agent/tpm/" + ekHash; res.AgentID.String() != want || !res.CanReattest {
				t.Fatalf("agent ID %s reattest %v, want %s", res.AgentID, res.CanReattest, want)
			}
			sels := selectorSet(res.Selectors)
			pcrs, _ := n.t.ReadPCRs([]int{0, 7})
			for _, want := range []string{
				"tpm:ek_hash:" + ekHash, "tpm:manufacturer:id:00001014", "tpm:model:swtpm", "tpm:version:id:20191023",
				"tpm:secureboot:disabled",
				"tpm:pcr:sha256:0:" + hexs(pcrs[0]), "tpm:pcr:sha256:7:" + hexs(pcrs[7]),
			} {
				if !sels[want] {
					t.Errorf("missing selector %s in %v", want, sels)
				}
			}
		})
	}
}

// TestAttestSecureBootEnabled: a node whose event log shows Secure Boot on
// (and replays to its quote) gets tpm:secureboot:enabled; the node whose
// PCRs hold a boot without it cannot present that log.
func TestAttestSecureBootEnabled(t *testing.T) {
	f := setup(t)
	signer, err := swtpm.BootSigner()
	if err != nil {
		t.Fatal(err)
	}
	sbLog, err := swtpm.MeasureBoot(f.b.t, swtpm.Boot(true, signer))
	if err != nil {
		t.Fatal(err)
	}
	a, err := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: f.roots, RequireEventLog: true})
	if err != nil {
		t.Fatal(err)
	}
	attest := func(n *node, log []byte) (map[string]bool, error) {
		res, err := a.Attest(context.Background(), mustJSON(t, n.data()), n.req, func(_ context.Context, c []byte) ([]byte, error) {
			ch, err := tpm.ParseChallenge(c)
			if err != nil {
				return nil, err
			}
			r := n.answer(t, ch)
			r.EventLog = log
			return mustJSON(t, r), nil
		})
		if err != nil {
			return nil, err
		}
		return selectorSet(res.Selectors), nil
	}
	sels, err := attest(f.b, sbLog)
	if err != nil {
		t.Fatal(err)
	}
	if !sels["tpm:secureboot:enabled"] || sels["tpm:secureboot:disabled"] {
		t.Fatalf("want tpm:secureboot:enabled only: %v", sels)
	}
	// Node a booted without Secure Boot: the enabled log does not replay.
	if _, err := attest(f.a, sbLog); err == nil {
		t.Fatal("a Secure Boot log was accepted from a node that did not boot it")
	}
}

func hexs(b []byte) string {
	const h = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, h[c>>4], h[c&15])
	}
	return string(out)
}

// otherRoots is a CA that never issued any EK certificate.
func otherRoots(t *testing.T) *tpm.EKRoots {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	r, err := tpm.LoadEKRoots(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rawQuote quotes with n's AK over an arbitrary selection.
func rawQuote(t testing.TB, n *node, qd []byte, sel tpm2.TPMLPCRSelection) tpm.Quote {
	h, name := n.ak.Handle()
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: qd},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      sel,
	}.Execute(n.t)
	if err != nil {
		t.Fatal(err)
	}
	return tpm.Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature), PCRs: map[int][]byte{}}
}

// unrestrictedAK builds AK parameters for a signing key that may sign
// anything: it could forge quotes.
func unrestrictedAK(t testing.TB, n *node) tpm.AKParams {
	tmpl := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
	}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(n.t)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(n.t)
	cc, err := tpm2.CertifyCreation{
		SignHandle:     tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:   tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		CreationHash:   rsp.CreationHash,
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
		CreationTicket: rsp.CreationTicket,
	}.Execute(n.t)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := rsp.OutPublic.Contents()
	return tpm.AKParams{Public: tpm2.Marshal(*pub), CreateData: rsp.CreationData.Bytes(),
		CreateAttestation: cc.CertifyInfo.Bytes(), CreateSignature: tpm2.Marshal(cc.Signature)}
}

// TestAttacks runs each attack of issue 5 against a real verifier and real
// TPMs; every row must be refused with PermissionDenied or InvalidArgument.
func TestAttacks(t *testing.T) {
	f := setup(t)
	honestAnswer := func(n *node) func(*testing.T, *tpm.Challenge) []byte {
		return func(t *testing.T, c *tpm.Challenge) []byte { return mustJSON(t, n.answer(t, c)) }
	}
	// A quote made in an earlier attestation, for replay.
	var oldQuote tpm.Quote
	{
		a, _ := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: f.roots})
		_, err := a.Attest(context.Background(), mustJSON(t, f.a.data()), f.a.req, func(_ context.Context, c []byte) ([]byte, error) {
			ch, _ := tpm.ParseChallenge(c)
			r := f.a.answer(t, ch)
			oldQuote = r.Quote
			return mustJSON(t, r), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	otherCSR, otherKey := newCSR(t)
	otherReq := parseCSR(t, otherCSR)
	ekHashA, _ := tpm.EKHash(f.a.ek.PublicKey())
	idA := "spiffe://example.org/spire/agent/tpm/" + ekHashA

	type row struct {
		name string
		cfg  func(*servertpm.Config)
		data func() []byte
		// csr is what the API hands Attest beside data; nil means
		// f.a's, unless noCSR.
		csr    *x509.CertificateRequest
		noCSR  bool
		answer func(*testing.T, *tpm.Challenge) []byte
		code   codes.Code
		want   string
	}
	dataOf := func(n *node, edit func(*tpm.AttestationData)) func() []byte {
		return func() []byte {
			d := n.data()
			if edit != nil {
				edit(&d)
			}
			return mustJSON(t, d)
		}
	}
	rows := []row{
		{name: "ek_cert_of_A_with_ek_public_of_B", data: dataOf(f.b, func(d *tpm.AttestationData) { d.EKCert = f.a.ek.Certificate }), csr: f.b.req,
			answer: honestAnswer(f.b), want: "EK public key is not the one of the EK certificate"},
		{name: "ek_cert_of_A_presented_by_B", data: dataOf(f.b, func(d *tpm.AttestationData) { d.EKCert, d.EKPublic = f.a.ek.Certificate, nil }), csr: f.b.req,
			answer: honestAnswer(f.b), want: "credential activation failed"},
		{name: "ak_not_in_the_ek_tpm", data: dataOf(f.a, func(d *tpm.AttestationData) { d.AK = f.b.ak.Params() }),
			answer: honestAnswer(f.a), want: "credential activation failed"},
		{name: "non_restricted_ak", data: dataOf(f.a, func(d *tpm.AttestationData) { d.AK = unrestrictedAK(t, f.a) }),
			want: "not a restricted signing key"},
		{name: "quote_replayed_with_old_nonce", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			r.Quote = oldQuote
			return mustJSON(t, r)
		}, want: "qualifying data"},
		{name: "quote_for_another_csr_key", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			q, err := f.a.t.Quote(f.a.ak, tpm.QualifyingData(c.Nonce, otherKey), c.PCRs)
			if err != nil {
				t.Fatal(err)
			}
			r.Quote = *q
			return mustJSON(t, r)
		}, want: "qualifying data"},
		{name: "attestation_data_for_another_csr", csr: otherReq, data: dataOf(f.a, nil), want: "another CSR key"},
		// The data names another CSR and the quote binds its key: an
		// honest proof, but not for the key the server would certify.
		{name: "quote_bound_to_the_csr_of_the_data_only", data: dataOf(f.a, func(d *tpm.AttestationData) { d.CSR = otherCSR }),
			answer: func(t *testing.T, c *tpm.Challenge) []byte {
				r := f.a.answer(t, c)
				q, err := f.a.t.Quote(f.a.ak, tpm.QualifyingData(c.Nonce, otherKey), c.PCRs)
				if err != nil {
					t.Fatal(err)
				}
				r.Quote = *q
				return mustJSON(t, r)
			}, want: "another CSR key"},
		// Without the CSR to certify nothing can be bound: refused before
		// any challenge, not verified without the binding.
		{name: "no_csr_to_certify", noCSR: true, data: dataOf(f.a, nil), code: codes.InvalidArgument, want: "no CSR to bind the quote to"},
		{name: "csr_to_certify_without_a_key", csr: &x509.CertificateRequest{}, data: dataOf(f.a, nil), code: codes.InvalidArgument, want: "no CSR to bind the quote to"},
		{name: "different_pcr_selection", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			q, err := f.a.t.Quote(f.a.ak, tpm.QualifyingData(c.Nonce, f.a.csrKeyDER), []int{0, 1})
			if err != nil {
				t.Fatal(err)
			}
			r.Quote = *q
			return mustJSON(t, r)
		}, want: "PCR selection differs"},
		{name: "empty_pcr_selection", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			r.Quote = rawQuote(t, f.a, tpm.QualifyingData(c.Nonce, f.a.csrKeyDER), tpm2.TPMLPCRSelection{})
			return mustJSON(t, r)
		}, want: "PCR selection differs"},
		{name: "tampered_pcr_value", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			r.Quote.PCRs[7] = make([]byte, 32)
			r.Quote.PCRs[7][0] = 1
			return mustJSON(t, r)
		}, want: "do not match the quoted digest"},
		{name: "event_log_not_replaying", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			r.EventLog = append(swtpm.SpecIDEvent(), swtpm.EventBytes(swtpm.Event{PCR: 0, Type: swtpm.EvPostCode, Data: []byte("x")}, make([]byte, 32))...)
			return mustJSON(t, r)
		}, want: "replay event log"},
		{name: "missing_required_event_log", cfg: func(c *servertpm.Config) { c.RequireEventLog = true }, data: dataOf(f.a, nil),
			answer: honestAnswer(f.a), want: "event log is required"},
		{name: "ek_cert_not_chaining_to_roots", cfg: func(c *servertpm.Config) { c.EKRoots = otherRoots(t) }, data: dataOf(f.a, nil),
			want: "certificate signed by unknown authority"},
		{name: "ek_cert_outside_validity", cfg: func(c *servertpm.Config) { c.Now = func() time.Time { return time.Now().AddDate(-1, 0, 0) } },
			data: dataOf(f.a, nil), want: "expired or is not yet valid"},
		{name: "unknown_nonce", data: dataOf(f.a, nil), answer: func(t *testing.T, c *tpm.Challenge) []byte {
			r := f.a.answer(t, c)
			r.Nonce = make([]byte, 32)
			return mustJSON(t, r)
		}, want: "unknown nonce"},
		{name: "same_agent_id_with_another_ak", cfg: func(c *servertpm.Config) {
			c.Nodes = &nodes{m: map[string][]*types.Selector{idA: {{Type: "tpm", Value: "ak_hash:" + strings.Repeat("ab", 32)}}}}
		}, data: dataOf(f.a, nil), want: "another attestation key"},
		{name: "reset_count_went_back", cfg: func(c *servertpm.Config) {
			c.Nodes = &nodes{m: map[string][]*types.Selector{idA: counters(uint64(uint32(currentReset(t, f.a)+1000)), 0, 0)}}
		}, data: dataOf(f.a, nil), answer: honestAnswer(f.a), want: "reset count went back"},
		{name: "clock_went_back_without_reboot", cfg: func(c *servertpm.Config) {
			c.Nodes = &nodes{m: map[string][]*types.Selector{idA: counters(currentReset(t, f.a), currentRestart(t, f.a), 1<<62)}}
		}, data: dataOf(f.a, nil), answer: honestAnswer(f.a), want: "clock went back"},
		{name: "garbage_payload", data: func() []byte { return []byte("\x00garbage{") }, code: codes.InvalidArgument},
		{name: "oversized_payload", data: func() []byte { return make([]byte, tpm.MaxAttestationData+1) }, code: codes.InvalidArgument},
		{name: "garbage_response", data: dataOf(f.a, nil), answer: func(*testing.T, *tpm.Challenge) []byte { return []byte("[]") }, code: codes.InvalidArgument},
		{name: "oversized_response", data: dataOf(f.a, nil), answer: func(*testing.T, *tpm.Challenge) []byte {
			return make([]byte, tpm.MaxChallengeResponse+1)
		}, code: codes.InvalidArgument},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			cfg := servertpm.Config{TrustDomain: td, EKRoots: f.roots}
			if r.cfg != nil {
				r.cfg(&cfg)
			}
			a, err := servertpm.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			csr := r.csr
			switch {
			case r.noCSR:
				csr = nil
			case csr == nil:
				csr = f.a.req
			}
			res, err := a.Attest(context.Background(), r.data(), csr, func(_ context.Context, c []byte) ([]byte, error) {
				if r.answer == nil {
					t.Fatal("the verifier sent a challenge for evidence it should have refused")
				}
				ch, err := tpm.ParseChallenge(c)
				if err != nil {
					t.Fatal(err)
				}
				return r.answer(t, ch), nil
			})
			code := r.code
			if code == codes.OK {
				code = codes.PermissionDenied
			}
			if status.Code(err) != code || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("err = %v, want %v containing %q (result %v)", err, code, r.want, res)
			}
		})
	}
}

func counters(reset, restart, clock uint64) []*types.Selector {
	return []*types.Selector{
		{Type: "tpm", Value: "reset_count:" + itoa(reset)},
		{Type: "tpm", Value: "restart_count:" + itoa(restart)},
		{Type: "tpm", Value: "clock:" + itoa(clock)},
	}
}

func itoa(v uint64) string { return big.NewInt(0).SetUint64(v).String() }

func currentRestart(t *testing.T, n *node) uint64 {
	q, err := n.t.Quote(n.ak, []byte("x"), []int{0})
	if err != nil {
		t.Fatal(err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(att.ClockInfo.RestartCount)
}

func currentReset(t *testing.T, n *node) uint64 {
	q, err := n.t.Quote(n.ak, []byte("x"), []int{0})
	if err != nil {
		t.Fatal(err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(att.ClockInfo.ResetCount)
}

// TestExpiredNonce answers after the nonce's lifetime.
func TestExpiredNonce(t *testing.T) {
	f := setup(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a, err := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: f.roots, NonceTTL: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Attest(context.Background(), mustJSON(t, f.a.data()), f.a.req, func(_ context.Context, c []byte) ([]byte, error) {
		ch, _ := tpm.ParseChallenge(c)
		r := f.a.answer(t, ch)
		mu.Lock()
		now = now.Add(2 * time.Minute)
		mu.Unlock()
		return mustJSON(t, r), nil
	})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "nonce expired") {
		t.Fatalf("err = %v", err)
	}
}

// TestReattestAcrossReboot attests, reboots the TPM (new reset count,
// fresh PCRs) and re-attests: the pinned AK matches, the counters moved
// forward, and the PCR selectors follow the new state.
func TestReattestAcrossReboot(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	roots, _ := tpm.LoadEKRoots(fleet.CABundle)
	store := &nodes{m: map[string][]*types.Selector{}}
	a, err := servertpm.New(servertpm.Config{TrustDomain: td, EKRoots: roots, Nodes: store})
	if err != nil {
		t.Fatal(err)
	}
	attest := func(extend bool) map[string]bool {
		n := openNode(t, fleet.TPMs[0].Path, "")
		defer func() { n.ak.Close(); n.t.Close() }()
		if extend {
			if err := n.t.Extend(7, make([]byte, 32)); err != nil {
				t.Fatal(err)
			}
		}
		res, err := a.Attest(context.Background(), mustJSON(t, n.data()), n.req, func(_ context.Context, c []byte) ([]byte, error) {
			ch, _ := tpm.ParseChallenge(c)
			return mustJSON(t, n.answer(t, ch)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		store.set(res.AgentID.String(), res.Selectors)
		return selectorSet(res.Selectors)
	}
	first := attest(true)
	if err := fleet.TPMs[0].Reboot(); err != nil {
		t.Fatal(err)
	}
	second := attest(false)
	pcr7 := func(m map[string]bool) string {
		for s := range m {
			if strings.HasPrefix(s, "tpm:pcr:sha256:7:") {
				return s
			}
		}
		return ""
	}
	if pcr7(first) == pcr7(second) {
		t.Errorf("PCR 7 selector did not follow the reboot: %s", pcr7(first))
	}
	reset := func(m map[string]bool) string {
		for s := range m {
			if strings.HasPrefix(s, "tpm:reset_count:") {
				return s
			}
		}
		return ""
	}
	if reset(first) == reset(second) {
		t.Errorf("reset count unchanged across reboot: %s", reset(first))
	}
}
