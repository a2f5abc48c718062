package x509pop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
)

// FuzzParseAttestationData: the payload comes from an unauthenticated
// agent; parsing must not panic, and must never admit more certificates
// than the bound.
func FuzzParseAttestationData(f *testing.F) {
	for _, s := range []string{`{"certificates":[]}`, `{"certificates":["MIIB"]}`, `{"certificates":null}`, `{"certificates":["", "", ""]}`, `[]`, "\x00", `{"certificates":[1]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseAttestationData(b, 2)
		if err != nil {
			return
		}
		if len(certs) == 0 || len(certs) > 3 {
			t.Fatalf("accepted %d certificates", len(certs))
		}
	})
}

// FuzzVerifyResponse: the response comes from the agent; no response
// may panic the verifier or verify without the key's signature.
func FuzzVerifyResponse(f *testing.F) {
	for _, s := range []string{
		`{"ecdsa_signature":{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","r":"AQ==","s":"AQ=="}}`,
		`{"rsa_signature":{"nonce":"","signature":""}}`, `{"ecdsa_signature":{"r":"","s":""}}`, `{}`, `null`, "\xff",
		`{"ecdsa_signature":{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","r":"AA==","s":"AA=="}}`,
	} {
		f.Add([]byte(s))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	nonce := make([]byte, NonceSize)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		if VerifyResponse(&key.PublicKey, nonce, r) == nil {
			t.Fatalf("forged response %q verified", b)
		}
	})
}
