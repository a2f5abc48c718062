package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// The EK fuzz targets run against certificates and public areas that
// swtpm_setup and swtpm_cert issued, captured once in testdata/ekcert, so
// they need no simulator and every run trusts the same CA: the local root
// and the intermediate that signs EK certificates (a three-certificate
// chain, the shape whose issuer VerifyEKCertificate caches).

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/ekcert/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func keyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// ekCAs are the CA certificates of the captured bundle.
func ekCAs(tb testing.TB) []*x509.Certificate {
	tb.Helper()
	var out []*x509.Certificate
	rest := readTestdata(tb, "ca-bundle.pem")
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) != 2 {
		tb.Fatalf("ca-bundle.pem holds %d certificates, want the root and the issuer", len(out))
	}
	return out
}

// FuzzVerifyEKCertificate: the EK certificate comes from an unauthenticated
// agent. One EKRoots serves every input, so its issuer cache, warmed by the
// honest seeds, is what most inputs meet; whatever it accepts must be
// signed by a CA of the bundle and accepted the same by fresh roots, which
// have no cache.
func FuzzVerifyEKCertificate(f *testing.F) {
	rsaCert, eccCert := readTestdata(f, "ek-rsa.der"), readTestdata(f, "ek-ecc.der")
	cas := ekCAs(f)
	f.Add(rsaCert)
	f.Add(eccCert)
	f.Add(cas[1].Raw) // a CA, not an EK certificate
	f.Add(cas[0].Raw)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	leaf, err := x509.ParseCertificate(rsaCert)
	if err != nil {
		f.Fatal(err)
	}
	// A fixed time inside every captured certificate's validity.
	now := leaf.NotBefore.Add(time.Hour)
	roots, err := tpm.LoadEKRoots("testdata/ekcert/ca-bundle.pem")
	if err != nil {
		f.Fatal(err)
	}
	for _, der := range [][]byte{rsaCert, eccCert} {
		if _, err := tpm.VerifyEKCertificate(der, roots, now); err != nil {
			f.Fatalf("captured EK certificate refused: %v", err)
		}
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := tpm.VerifyEKCertificate(der, roots, now)
		if err != nil {
			if c != nil {
				t.Fatal("an error with a certificate")
			}
			return
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("accepted what x509 cannot parse: %v", err)
		}
		signed := false
		for _, ca := range cas {
			signed = signed || cert.CheckSignatureFrom(ca) == nil
		}
		if !signed {
			t.Fatal("accepted a certificate no CA of the bundle signed")
		}
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) || now.Before(c.NotBefore) || now.After(c.NotAfter) {
			t.Fatal("accepted a certificate outside its validity")
		}
		if !keyEqual(c.PublicKey, cert.PublicKey) || c.Manufacturer == "" {
			t.Fatalf("result key or manufacturer %q is not the certificate's", c.Manufacturer)
		}
		switch c.PublicKey.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
		default:
			t.Fatalf("accepted an EK of type %T", c.PublicKey)
		}
		cold, err := tpm.LoadEKRoots("testdata/ekcert/ca-bundle.pem")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tpm.VerifyEKCertificate(der, cold, now); err != nil {
			t.Fatalf("accepted through the issuer cache, refused without it: %v", err)
		}
	})
}

// FuzzParseEKPublic: TPMs without an EK certificate send the EK's public
// area, which an allow-list then names. Whatever is accepted must be what
// go-tpm decodes, of the shape of an endorsement key.
func FuzzParseEKPublic(f *testing.F) {
	for _, name := range []string{"ek-rsa.public", "ek-ecc.public"} {
		b := readTestdata(f, name)
		if _, err := tpm.ParseEKPublic(b); err != nil {
			f.Fatalf("captured %s refused: %v", name, err)
		}
		f.Add(b)
	}
	f.Add(tpm2.Marshal(tpm2.RSASRKTemplate))
	f.Add(tpm2.Marshal(tpm2.ECCEKTemplate))
	f.Add([]byte{0, 1, 0, 0x0b})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := tpm.ParseEKPublic(b)
		if err != nil {
			return
		}
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
		if err != nil {
			t.Fatalf("accepted what go-tpm refuses: %v", err)
		}
		a := pub.ObjectAttributes
		if !a.FixedTPM || !a.FixedParent || !a.Restricted || !a.Decrypt || a.SignEncrypt {
			t.Fatalf("accepted a key that is not a restricted decryption key fixed to its TPM: %+v", a)
		}
		ref, err := tpm.PublicKeyFromTPM(pub)
		if err != nil || !keyEqual(ref, k) {
			t.Fatalf("key differs from go-tpm's (%v)", err)
		}
		if _, err := tpm.EKHash(k); err != nil {
			t.Fatalf("accepted a key with no EK hash: %v", err)
		}
	})
}

// FuzzParseChallengeResponse: the agent's answer to the challenge. What is
// accepted has every field the verifier needs and survives a round trip,
// so the verifier checks what the agent sent, not a partial reading.
func FuzzParseChallengeResponse(f *testing.F) {
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"/1RDR4AYAAA=","signature":"ABgACwAgAAE=","pcrs":{"0":"AA=="}},"event_log":"AAAA"}`))
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"AQ==","signature":""}}`))
	f.Add([]byte(`{"secret":"","nonce":"AQ==","quote":{"attest":"AQ=="}}`))
	f.Add([]byte(`{"secret":"AQ==","nonce":"AQ==","quote":{"attest":"AQ==","pcrs":{"-1":"AA==","99999999999":"AA=="}}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := tpm.ParseChallengeResponse(b)
		if err != nil {
			if r != nil {
				t.Fatal("an error with a response")
			}
			return
		}
		if len(b) > tpm.MaxChallengeResponse {
			t.Fatalf("accepted %d bytes, over the limit", len(b))
		}
		if len(r.Secret) == 0 || len(r.Nonce) == 0 || len(r.Quote.Attest) == 0 {
			t.Fatal("accepted a response without secret, nonce or quote")
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := tpm.ParseChallengeResponse(again)
		if err != nil || !bytes.Equal(r2.Secret, r.Secret) || !bytes.Equal(r2.Nonce, r.Nonce) ||
			!bytes.Equal(r2.Quote.Attest, r.Quote.Attest) || !bytes.Equal(r2.Quote.Signature, r.Quote.Signature) ||
			!bytes.Equal(r2.EventLog, r.EventLog) || len(r2.Quote.PCRs) != len(r.Quote.PCRs) {
			t.Fatalf("response does not survive a round trip (%v)", err)
		}
		for i, v := range r.Quote.PCRs {
			if !bytes.Equal(r2.Quote.PCRs[i], v) {
				t.Fatalf("PCR %d does not survive a round trip", i)
			}
		}
	})
}
