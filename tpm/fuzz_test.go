package tpm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// Every parser of agent input must refuse garbage without panicking.

func FuzzParseAttestationData(f *testing.F) {
	f.Add([]byte(`{"ek_cert":"AAEC","ak":{"public":"AAEC"},"csr":"AAEC"}`))
	f.Add([]byte(`{"ek_public":"AAEC","ak":{"public":"AAEC","create_data":"","create_attestation":null},"csr":"AQ=="}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := tpm.ParseAttestationData(b)
		if err != nil {
			return
		}
		_, _ = tpm.VerifyAK(d.AK)
		_, _ = tpm.ParseEKPublic(d.EKPublic)
		_, _ = tpm.CSRKeyDER(d.CSR)
	})
}

func FuzzVerifyQuote(f *testing.F) {
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"/1RDR4AYAAA=","signature":"ABgACwAgAAE=","pcrs":{"0":"AA=="}}}`))
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"AQ==","signature":""}}`))
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ak := &tpm.AKPublic{Key: &k.PublicKey}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := tpm.ParseChallengeResponse(b)
		if err != nil {
			return
		}
		if _, err := tpm.VerifyQuote(ak, &r.Quote, r.Nonce, []int{0}); err == nil {
			t.Fatal("a quote with a forged signature verified")
		}
	})
}

func FuzzReplayEventLog(f *testing.F) {
	f.Add(swtpm.SpecIDEvent())
	f.Add(append(swtpm.SpecIDEvent(), swtpm.EventBytes(swtpm.Event{PCR: 7, Type: swtpm.EvSeparator, Data: []byte{0, 0, 0, 0}}, make([]byte, 32))...))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = tpm.ReplayEventLog(b, map[int][]byte{0: make([]byte, 32), 7: make([]byte, 32)})
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add([]byte(`{"credential":{"id_object":"AQ==","encrypted_secret":"AQ=="},"nonce":"AQ==","pcrs":[0,1]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = tpm.ParseChallenge(b)
	})
}
