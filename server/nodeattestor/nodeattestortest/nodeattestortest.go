// Package nodeattestortest is the conformance suite every node attestation
// method must pass: a server-side verifier (nodeattestor.Attestor) together
// with the agent-side collector that produces its evidence, whether both are
// built-ins (x509pop, sshpop, join_token, tpm) or external SDK plugins
// behind server/nodeattestor/external and agent/nodeattestor/external.
//
// The suite drives the exchange the AttestAgent stream carries, in process:
// the agent's attestation data goes to the verifier, and every challenge the
// verifier sends is answered by the agent. It checks that an honest agent
// gets an agent ID of the method's own in the trust domain and selectors of
// the method's type, and that tampered evidence, missing evidence and wrong
// answers are refused with the codes an agent is refused with; for a method
// whose evidence binds the agent's key (Pair.BindsCSR), so is evidence
// checked against no CSR or another CSR than the agent's.
//
// This package is the server's, so it does not import the agent's: Agent
// is declared here with the methods of agent/nodeattestor.Attestor, which
// every agent collector already has.
package nodeattestortest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// callBound is how long one attestation may take before the suite calls it
// hung: generous, so that it catches a verifier that never returns, not a
// slow one.
const callBound = 10 * time.Second

// Agent is the agent side of an attestation method: what the agent sends
// first and how it answers challenges (agent/nodeattestor.Attestor).
type Agent interface {
	Type() string
	AttestationData(ctx context.Context, csr []byte) ([]byte, error)
	Respond(ctx context.Context, challenge []byte) ([]byte, error)
}

// Pair is one attestation method, both sides, ready for one attestation.
type Pair struct {
	Server      nodeattestor.Attestor
	Agent       Agent
	TrustDomain spiffeid.TrustDomain
	// WantAgentIDPrefix, if set, is what the honest agent's ID must start
	// with: the method's agent path and as much of the agent's own part
	// as the pair knows ("spiffe://example.org/spire/agent/x509pop/<fingerprint>").
	// Whatever it says, the ID must be in TrustDomain and under
	// /spire/agent/<type>/ with a non-empty rest.
	WantAgentIDPrefix string
	// BindsCSR says the method's evidence binds the key of the agent's
	// CSR (tpm): the verifier must then refuse an attestation given no
	// CSR, or another CSR than the one the agent bound.
	BindsCSR bool
}

// Run runs the suite. newPair must return a fresh pair each time it is
// called, since a method's evidence may be single-use (a join token); it
// may register cleanups on the t it is given.
func Run(t *testing.T, newPair func(t *testing.T) Pair) {
	t.Helper()
	t.Run("Honest", func(t *testing.T) { testHonest(t, newPair) })
	t.Run("TamperedPayload", func(t *testing.T) { testTamperedPayload(t, newPair) })
	t.Run("EveryByteOfShortPayload", func(t *testing.T) { testEveryByte(t, newPair) })
	t.Run("EmptyPayload", func(t *testing.T) { testEmptyPayload(t, newPair(t)) })
	t.Run("WrongAnswer", func(t *testing.T) { testWrongAnswer(t, newPair) })
	t.Run("CSR", func(t *testing.T) { testCSR(t, newPair) })
}

// attestation is one run of the exchange.
type attestation struct {
	res        *nodeattestor.Result
	err        error
	challenges int32
}

// tamper changes what the verifier receives: payload the agent's
// payload, answer each of the agent's answers, csr the CSR the agent bound
// its evidence to. A nil field changes nothing.
type tamper struct {
	payload func(payload []byte) []byte
	answer  answerFunc
	csr     func(agent *x509.CertificateRequest) *x509.CertificateRequest
}

type answerFunc func(answer []byte) []byte

// attest runs one attestation of p: the agent's payload to the verifier,
// each challenge to the agent and its answer back, each through tm. It
// fails t if the agent cannot produce its evidence or the exchange does
// not end within the bound.
func attest(t *testing.T, p Pair, tm tamper) attestation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callBound)
	defer cancel()
	// Both sides get the same CSR, as the AttestAgent request carries it:
	// the agent to bind into its evidence, the verifier to check it.
	csrDER, csr := newCSR(t, p.TrustDomain)
	// An agent that holds a stream open for its challenges (an external
	// plugin) is told the attestation is over, as the agent's client does.
	if d, ok := p.Agent.(interface{ Done() }); ok {
		defer d.Done()
	}
	payload, err := p.Agent.AttestationData(ctx, csrDER)
	if err != nil {
		t.Fatalf("agent AttestationData: %v", err)
	}
	if tm.payload != nil {
		payload = tm.payload(payload)
	}
	if tm.csr != nil {
		csr = tm.csr(csr)
	}
	done := make(chan attestation, 1)
	go func() {
		var a attestation
		// The verifier may call back from a goroutine of its own.
		var challenges atomic.Int32
		a.res, a.err = p.Server.Attest(ctx, payload, csr, func(ctx context.Context, challenge []byte) ([]byte, error) {
			challenges.Add(1)
			answer, err := p.Agent.Respond(ctx, challenge)
			if err != nil {
				return nil, err
			}
			if tm.answer != nil {
				answer = tm.answer(answer)
			}
			return answer, nil
		})
		a.challenges = challenges.Load()
		done <- a
	}()
	timer := time.NewTimer(callBound + time.Second)
	defer timer.Stop()
	select {
	case a := <-done:
		return a
	case <-timer.C:
		t.Fatalf("Attest did not return within %v", callBound)
		return attestation{}
	}
}

// newCSR makes the CSR an agent sends with its evidence: a fresh P-256 key
// and the trust domain's ID.
func newCSR(t *testing.T, td spiffeid.TrustDomain) ([]byte, *x509.CertificateRequest) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	if !td.IsZero() {
		tmpl.URIs = append(tmpl.URIs, td.ID().URL())
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return der, csr
}

// testHonest attests an honest agent and checks what the server will
// store: an ID in the trust domain under the method's agent path, and
// selectors of the method's type.
func testHonest(t *testing.T, newPair func(t *testing.T) Pair) {
	p := newPair(t)
	typ := p.Server.Type()
	if typ == "" {
		t.Fatal("verifier has an empty Type")
	}
	if p.Agent.Type() != typ {
		t.Fatalf("agent Type %q does not match verifier Type %q: the server would route its evidence elsewhere", p.Agent.Type(), typ)
	}
	a := attest(t, p, tamper{})
	if a.err != nil {
		t.Fatalf("honest attestation refused: %v", a.err)
	}
	if a.res == nil {
		t.Fatal("honest attestation returned neither a result nor an error")
	}
	id := a.res.AgentID
	if id.IsZero() {
		t.Fatal("no agent ID")
	}
	if !id.MemberOf(p.TrustDomain) {
		t.Errorf("agent ID %s is not in trust domain %s", id, p.TrustDomain)
	}
	if agentPath := "/spire/agent/" + typ + "/"; !strings.HasPrefix(id.Path(), agentPath) || len(id.Path()) == len(agentPath) {
		t.Errorf("agent ID %s is not an agent of %s (%s...)", id, typ, agentPath)
	}
	if want := p.WantAgentIDPrefix; want != "" && !strings.HasPrefix(id.String(), want) {
		t.Errorf("agent ID %s does not start with %s", id, want)
	}
	for i, s := range a.res.Selectors {
		switch {
		case s == nil:
			t.Errorf("selector %d is nil", i)
		case s.Type != typ:
			t.Errorf("selector %d %q:%q is not of type %q", i, s.Type, s.Value, typ)
		case s.Value == "":
			t.Errorf("selector %d of type %q has an empty value", i, s.Type)
		}
	}
	t.Logf("%s: agent %s, %d selectors, %d challenges", typ, id, len(a.res.Selectors), a.challenges)
}

// checkRefused fails t unless the attestation was refused the way an agent
// is refused: PermissionDenied or InvalidArgument. An error that is not a
// gRPC status becomes PermissionDenied on the wire (see
// nodeattestor.Attestor), so it counts as one.
func checkRefused(t *testing.T, what string, a attestation) {
	t.Helper()
	if a.err == nil {
		id := "no result"
		if a.res != nil {
			id = a.res.AgentID.String()
		}
		t.Fatalf("%s accepted (%s)", what, id)
	}
	code := codes.PermissionDenied
	var st interface{ GRPCStatus() *status.Status }
	if errors.As(a.err, &st) {
		code = st.GRPCStatus().Code()
	}
	if code != codes.PermissionDenied && code != codes.InvalidArgument {
		t.Errorf("%s refused with %v (%v), want PermissionDenied or InvalidArgument", what, code, a.err)
	}
}

// flips are the single-byte changes made to evidence: the lowest bit (the
// change most likely to leave an encoding valid) and the whole byte.
var flips = []byte{0x01, 0xff}

// positions are the bytes changed in a payload: the first, the middle and
// the last, which cover a framing byte at either end and the body of any
// encoding. They are relative, since evidence with fresh keys and
// signatures need not have the same length twice.
var positions = []struct {
	name string
	at   func(n int) int
}{
	{"first", func(int) int { return 0 }},
	{"middle", func(n int) int { return n / 2 }},
	{"last", func(n int) int { return n - 1 }},
}

func flipped(b []byte, i int, mask byte) []byte {
	out := bytes.Clone(b)
	out[i] ^= mask
	return out
}

// testTamperedPayload changes one byte of the honest agent's payload and
// lets the agent answer every challenge honestly: the change alone must
// make the verifier refuse.
func testTamperedPayload(t *testing.T, newPair func(t *testing.T) Pair) {
	for _, pos := range positions {
		for _, mask := range flips {
			t.Run(fmt.Sprintf("%s byte xor %#02x", pos.name, mask), func(t *testing.T) {
				a := attest(t, newPair(t), tamper{payload: func(b []byte) []byte {
					if len(b) == 0 {
						t.Fatal("the agent's honest payload is empty")
					}
					return flipped(b, pos.at(len(b)), mask)
				}})
				checkRefused(t, "payload with a flipped byte", a)
			})
		}
	}
}

// shortPayload is the largest payload whose every byte is flipped in turn:
// a short payload is mostly the claim itself (a node name, a token), and a
// verifier must bind all of it, not only its framing.
const shortPayload = 64

// testEveryByte flips each byte of a short payload in turn, the agent
// answering every challenge honestly: each change must be refused.
func testEveryByte(t *testing.T, newPair func(t *testing.T) Pair) {
	for i := 0; i < shortPayload; i++ {
		n := -1
		a := attest(t, newPair(t), tamper{payload: func(b []byte) []byte {
			n = len(b)
			if i >= len(b) {
				return b
			}
			return flipped(b, i, 0x01)
		}})
		if n > shortPayload {
			t.Skipf("payload of %d bytes: the first, middle and last bytes are flipped instead", n)
		}
		if i >= n {
			return
		}
		checkRefused(t, fmt.Sprintf("payload with byte %d of %d flipped", i, n), a)
	}
}

// testEmptyPayload sends no evidence at all.
func testEmptyPayload(t *testing.T, p Pair) {
	a := attest(t, p, tamper{payload: func([]byte) []byte { return []byte{} }})
	checkRefused(t, "empty payload", a)
}

// testWrongAnswer answers the verifier's challenges wrongly: with garbage,
// and with the honest answer changed in one byte. A method that sends no
// challenge has nothing to answer and skips.
func testWrongAnswer(t *testing.T, newPair func(t *testing.T) Pair) {
	garbage := bytes.Repeat([]byte("\x00garbage\xff"), 8)
	for _, tc := range []struct {
		name   string
		answer answerFunc
	}{
		{"garbage", func([]byte) []byte { return bytes.Clone(garbage) }},
		{"honest answer with a flipped byte", func(b []byte) []byte {
			if len(b) == 0 {
				return garbage
			}
			return flipped(b, len(b)/2, 0x01)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := attest(t, newPair(t), tamper{answer: tc.answer})
			if a.challenges == 0 {
				if a.err != nil {
					t.Fatalf("honest payload refused without a challenge: %v", a.err)
				}
				t.Skip("the method sends no challenge")
			}
			checkRefused(t, "wrong challenge answer", a)
		})
	}
}

// testCSR gives the verifier of a method that binds the agent's key no CSR,
// or another CSR than the one the agent's evidence binds, with the agent
// answering every challenge honestly: either must be refused, since the
// server would otherwise certify a key the evidence does not vouch for.
func testCSR(t *testing.T, newPair func(t *testing.T) Pair) {
	p := newPair(t)
	if !p.BindsCSR {
		t.Skip("the method's evidence binds no key")
	}
	a := attest(t, p, tamper{csr: func(*x509.CertificateRequest) *x509.CertificateRequest { return nil }})
	checkRefused(t, "evidence verified without the CSR to certify", a)

	_, other := newCSR(t, p.TrustDomain)
	a = attest(t, newPair(t), tamper{csr: func(*x509.CertificateRequest) *x509.CertificateRequest { return other }})
	checkRefused(t, "evidence for another CSR than the one to certify", a)
}
