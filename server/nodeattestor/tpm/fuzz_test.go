package tpm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	servertpm "github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/tpm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The fuzz targets feed the attestor's two inputs from the network, the
// attestation data and the challenge response, to Attest itself, with a
// fixed trust configuration: the soft TPM's root, and its EK on the
// allow-list too, so that both the certificate and the bare public key
// paths are reached. One attestor serves every input, as one serves every
// agent, so its nonce store and certificate cache are fuzzed with it.

// fuzzPCRs is the PCR selection of the fuzzed attestor.
var fuzzPCRs = []int{0, 7}

func newFuzzAttestor(tb testing.TB, s *softTPM) *servertpm.Attestor {
	tb.Helper()
	a, err := servertpm.New(servertpm.Config{
		TrustDomain: td, EKRoots: s.roots(), EKHashes: map[string]bool{s.ekHash: true},
		PCRs: fuzzPCRs, Now: func() time.Time { return softNow },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// checkRefusal fails t unless err is how the attestor refuses an agent:
// PermissionDenied or InvalidArgument, or the soft TPM's failure to
// activate a credential made for another key, which the attestor passes
// on as the agent's error.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, errActivation) {
		return
	}
	if c := status.Code(err); c != codes.PermissionDenied && c != codes.InvalidArgument {
		t.Fatalf("refused with %v (%v), want PermissionDenied or InvalidArgument", c, err)
	}
}

// checkAccepted checks what an accepted attestation established: the soft
// TPM's agent ID and AK, whatever the input was, since no other EK is
// trusted and no other AK can sign.
func checkAccepted(t *testing.T, s *softTPM, res *nodeattestor.Result) {
	t.Helper()
	want, err := servertpm.AgentID(td, s.ekHash)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID != want {
		t.Fatalf("accepted as %s, want %s", res.AgentID, want)
	}
	sels := selectorSet(res.Selectors)
	if !sels["tpm:ak_hash:"+s.akHash] || !sels["tpm:ek_hash:"+s.ekHash] {
		t.Fatalf("accepted without the soft TPM's EK and AK hashes: %v", sels)
	}
}

func honestPayload(tb testing.TB, s *softTPM, edit func(*tpm.AttestationData)) []byte {
	tb.Helper()
	d := s.data()
	if edit != nil {
		edit(&d)
	}
	return mustJSON(tb, d)
}

// FuzzAttestData: the attestation data, answered honestly by the soft
// TPM whenever the challenge lets it (it cannot activate a credential made
// for another EK or AK). Whatever is accepted is the soft TPM.
func FuzzAttestData(f *testing.F) {
	s := newSoftTPM(f)
	f.Add(honestPayload(f, s, nil))
	f.Add(honestPayload(f, s, func(d *tpm.AttestationData) { d.EKPublic = nil }))
	f.Add(honestPayload(f, s, func(d *tpm.AttestationData) { d.EKCert = nil }))
	f.Add(honestPayload(f, s, func(d *tpm.AttestationData) { d.AK.CreateSignature = nil }))
	f.Add([]byte(`{"ek_public":"AAEC","ak":{"public":"AAEC"},"csr":"AQ=="}`))
	a := newFuzzAttestor(f, s)
	f.Fuzz(func(t *testing.T, payload []byte) {
		challenges := 0
		res, err := a.Attest(context.Background(), payload, s.csrReq, func(_ context.Context, raw []byte) ([]byte, error) {
			challenges++
			c, err := tpm.ParseChallenge(raw)
			if err != nil {
				t.Fatalf("the attestor sent a challenge its agent cannot parse: %v", err)
			}
			r, err := s.answer(c)
			if err != nil {
				return nil, err
			}
			return json.Marshal(r)
		})
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if challenges != 1 {
			t.Fatalf("accepted after %d challenges", challenges)
		}
		checkAccepted(t, s, res)
	})
}

// FuzzAttestChallengeResponse: the answer to the challenge, for honest
// attestation data. fix chooses what the harness repairs in the answer
// (fixNonce, ...), so that mutations reach the quote checks behind the
// nonce, the secret and the signature. Whatever is accepted echoes this
// challenge's nonce and secret, binds the CSR's key and reports the PCR
// values it quoted.
func FuzzAttestChallengeResponse(f *testing.F) {
	s := newSoftTPM(f)
	a := newFuzzAttestor(f, s)
	payload := honestPayload(f, s, nil)
	// An honest answer to an earlier challenge: stale in nonce, secret
	// and qualifying data, which the fix bits repair.
	var stale []byte
	if _, err := a.Attest(context.Background(), payload, s.csrReq, func(_ context.Context, raw []byte) ([]byte, error) {
		c, err := tpm.ParseChallenge(raw)
		if err != nil {
			return nil, err
		}
		r, err := s.answer(c)
		if err != nil {
			return nil, err
		}
		stale = mustJSON(f, r)
		return stale, nil
	}); err != nil {
		f.Fatalf("honest attestation refused: %v", err)
	}
	// The same with the AK's certification of the CSR key (agent_key),
	// stale too.
	var r tpm.ChallengeResponse
	if err := json.Unmarshal(stale, &r); err != nil {
		f.Fatal(err)
	}
	r.AgentKey = s.certify(r.Nonce)
	staleResident := mustJSON(f, r)
	for _, fix := range []uint8{fixAll, 0, fixNonce, fixNonce | fixSecret, fixNonce | fixSecret | fixExtraData} {
		f.Add(stale, fix)
		f.Add(staleResident, fix)
	}
	f.Add(staleResident, uint8(fixAll&^fixAgentKey))
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"/1RDR4AYAAA=","signature":"","pcrs":{"0":"AA=="}},"agent_key":{"public":"ACM=","attest":"/1RDR4AXAAA=","signature":""}}`), uint8(fixAll))
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"/1RDR4AYAAA=","signature":"","pcrs":{"0":"AA=="}}}`), uint8(fixAll))
	f.Add([]byte(`[]`), uint8(fixAll))
	f.Fuzz(func(t *testing.T, raw []byte, fix uint8) {
		var sent []byte
		var chal *tpm.Challenge
		res, err := a.Attest(context.Background(), payload, s.csrReq, func(_ context.Context, c []byte) ([]byte, error) {
			if chal != nil {
				t.Fatal("a second challenge")
			}
			var err error
			if chal, err = tpm.ParseChallenge(c); err != nil {
				t.Fatalf("the attestor sent a challenge its agent cannot parse: %v", err)
			}
			sent = s.fixResponse(raw, fix, chal)
			return sent, nil
		})
		if err != nil {
			checkRefusal(t, err)
			return
		}
		checkAccepted(t, s, res)
		r, err := tpm.ParseChallengeResponse(sent)
		if err != nil {
			t.Fatalf("accepted a response that does not parse: %v", err)
		}
		secret, err := s.activate(chal.Credential)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Nonce, chal.Nonce) || !bytes.Equal(r.Secret, secret) {
			t.Fatal("accepted a response with another nonce or secret")
		}
		att, err := tpm2.Unmarshal[tpm2.TPMSAttest](r.Quote.Attest)
		if err != nil {
			t.Fatalf("accepted a quote go-tpm cannot decode: %v", err)
		}
		if !bytes.Equal(att.ExtraData.Buffer, tpm.QualifyingData(chal.Nonce, s.csrKey)) {
			t.Fatal("accepted a quote that does not bind this nonce and the CSR's key")
		}
		sels := selectorSet(res.Selectors)
		// The selector says the CSR key was certified for this
		// challenge; without it the response carried no proof.
		switch resident := sels["tpm:agent_key:resident"]; {
		case resident != (r.AgentKey != nil):
			t.Fatalf("tpm:agent_key:resident is %v with agent_key %v", resident, r.AgentKey != nil)
		case r.AgentKey != nil:
			ca, err := tpm2.Unmarshal[tpm2.TPMSAttest](r.AgentKey.Attest)
			if err != nil {
				t.Fatalf("accepted a certification go-tpm cannot decode: %v", err)
			}
			if !bytes.Equal(ca.ExtraData.Buffer, tpm.AgentKeyQualifyingData(chal.Nonce, s.csrKey)) {
				t.Fatal("accepted a certification that does not bind this nonce and the CSR's key")
			}
		}
		for _, i := range fuzzPCRs {
			if want := fmt.Sprintf("tpm:pcr:sha256:%d:%s", i, hexs(r.Quote.PCRs[i])); !sels[want] {
				t.Fatalf("PCR %d selector is not the quoted value: %v", i, sels)
			}
		}
	})
}

// TestSoftTPMAttests: the soft TPM's honest evidence is accepted, with and
// without an EK certificate, and the response fix-ups turn a stale honest
// answer into an accepted one. Without this the fuzz targets could refuse
// everything and still pass.
func TestSoftTPMAttests(t *testing.T) {
	s := newSoftTPM(t)
	a := newFuzzAttestor(t, s)
	for name, payload := range map[string][]byte{
		"ek_cert":    honestPayload(t, s, nil),
		"ek_public":  honestPayload(t, s, func(d *tpm.AttestationData) { d.EKCert = nil }),
		"no_ek_cert": honestPayload(t, s, func(d *tpm.AttestationData) { d.EKPublic = nil }),
	} {
		t.Run(name, func(t *testing.T) {
			res, err := a.Attest(context.Background(), payload, s.csrReq, func(_ context.Context, raw []byte) ([]byte, error) {
				c, err := tpm.ParseChallenge(raw)
				if err != nil {
					return nil, err
				}
				r, err := s.answer(c)
				if err != nil {
					return nil, err
				}
				return json.Marshal(r)
			})
			if err != nil {
				t.Fatal(err)
			}
			checkAccepted(t, s, res)
		})
	}
	var stale []byte
	answer := func(fix uint8) error {
		_, err := a.Attest(context.Background(), honestPayload(t, s, nil), s.csrReq, func(_ context.Context, raw []byte) ([]byte, error) {
			c, err := tpm.ParseChallenge(raw)
			if err != nil {
				return nil, err
			}
			if stale == nil {
				r, err := s.answer(c)
				if err != nil {
					return nil, err
				}
				stale = mustJSON(t, r)
				return stale, nil
			}
			return s.fixResponse(stale, fix, c), nil
		})
		return err
	}
	if err := answer(0); err != nil {
		t.Fatal(err)
	}
	if err := answer(0); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stale answer: err = %v, want PermissionDenied", err)
	}
	if err := answer(fixAll); err != nil {
		t.Fatalf("stale answer with every fix-up: %v", err)
	}
	// Without the new signature the repaired qualifying data is forged.
	if err := answer(fixAll &^ fixSignature); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("repaired quote without a signature: err = %v, want PermissionDenied", err)
	}
	// With the certification of the CSR key the agent is admitted as
	// resident; a stale certification is refused.
	attestResident := func(stale bool) (*nodeattestor.Result, error) {
		return a.Attest(context.Background(), honestPayload(t, s, nil), s.csrReq, func(_ context.Context, raw []byte) ([]byte, error) {
			c, err := tpm.ParseChallenge(raw)
			if err != nil {
				return nil, err
			}
			r, err := s.answer(c)
			if err != nil {
				return nil, err
			}
			r.AgentKey = s.certify(c.Nonce)
			if stale {
				r.AgentKey = s.certify([]byte("another nonce"))
			}
			return json.Marshal(r)
		})
	}
	res, err := attestResident(false)
	if err != nil {
		t.Fatalf("soft TPM with a certified agent key: %v", err)
	}
	if !selectorSet(res.Selectors)["tpm:agent_key:resident"] {
		t.Fatalf("certified agent key without tpm:agent_key:resident: %v", res.Selectors)
	}
	if _, err := attestResident(true); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("certification for another nonce: err = %v, want PermissionDenied", err)
	}
	if _, err := s.activate(tpm.Credential{IDObject: []byte{0, 1, 2}, EncryptedSecret: []byte{1}}); !errors.Is(err, errActivation) {
		t.Fatalf("activated garbage: %v", err)
	}
}
