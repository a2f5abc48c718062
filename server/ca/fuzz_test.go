package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// The journal comes from the datastore, which the CA does not trust to be
// intact: decoding must reject, never panic.
func FuzzDecodeJournal(f *testing.F) {
	f.Add(sampleJournal(f))
	f.Add([]byte(`{"version":1,"x509_cas":[],"jwt_keys":[]}`))
	f.Add([]byte(`{"version":1,"x509_cas":[{"slot":"A","key_id":"x509-CA-A","status":"active","issued_at":1,"not_after":2}]}`))
	f.Add([]byte(`{"version":1,"jwt_keys":[{"slot":"B","key_id":"JWT-Signer-B","kid":"k","status":"prepared","public_key":"AAAA","issued_at":1,"not_after":2}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		xs, js, err := decodeJournal(data)
		if err != nil {
			return
		}
		if _, err := encodeJournal(xs, js); err != nil {
			t.Fatalf("decoded journal does not encode: %v", err)
		}
	})
}

// FuzzLeafTBS holds the DER encoder to CreateCertificate's output for any
// SPIFFE ID path, DNS names, subject, serial and validity.
func FuzzLeafTBS(f *testing.F) {
	f.Add("/w", "web.example.org", "", "Acme", []byte{1}, int64(1795000000), uint32(3600))
	f.Add("/ns/a/sa/b", "", "cn", "", []byte{0x80, 0, 0, 1}, int64(2524608000), uint32(60))
	f.Add("/x", "a,b", "", "", []byte{0xff, 0xff}, int64(-631152001), uint32(1))
	parent, _ := testCA(f, keymanager.ECP256)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, path, dns, cn, org string, serial []byte, notBefore int64, ttl uint32) {
		id, err := spiffeid.FromPath(td, path)
		if err != nil || id.Path() == "" {
			return
		}
		n := new(big.Int).SetBytes(serial)
		if n.Sign() == 0 || n.BitLen() > 160 {
			return
		}
		nb := time.Unix(notBefore, 0)
		if nb.Year() < 1 || nb.Year() > 9000 {
			return
		}
		p := X509SVIDParams{SPIFFEID: id}
		if dns != "" {
			p.DNSNames = splitComma(dns)
			for _, n := range p.DNSNames {
				if n == "" {
					return // refused before encoding
				}
			}
		}
		if org != "" || cn != "" {
			p.Subject = pkix.Name{CommonName: cn}
			if org != "" {
				p.Subject.Organization = []string{org}
			}
		}
		if _, err := leafSubject(p); err != nil {
			return // refused before encoding (a subject that is not UTF-8)
		}
		lt := template(t, parent, key.Public(), p, n, nb, nb.Add(time.Duration(ttl)*time.Second))
		got, gotErr := lt.tbs()
		want, wantErr := stdlibTBS(lt, subjectName(p), key.Public(), parent)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("tbs error %v, CreateCertificate error %v", gotErr, wantErr)
		}
		if gotErr == nil && !bytes.Equal(got, want) {
			t.Fatalf("TBSCertificate differs from CreateCertificate's:\n got %x\nwant %x", got, want)
		}
	})
}

// FuzzJWTClaims holds the JWT writer to go-jose's bytes for any issuer and
// audiences.
func FuzzJWTClaims(f *testing.F) {
	f.Add("", "db", "", int64(1795000300), int64(1795000000))
	f.Add("https://oidc.example.org", "a\"b", "<&>", int64(1), int64(0))
	f.Add("\xff", "\u2028", "\t", int64(-5), int64(9))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	alg := jwsAlgorithms[keymanager.ECP256]
	f.Fuzz(func(t *testing.T, iss, aud1, aud2 string, exp, iat int64) {
		if time.Unix(exp, 0).IsZero() || time.Unix(iat, 0).IsZero() {
			return // go-jose leaves out a zero time; a CA clock is never there
		}
		c := jwtClaims{iss: iss, sub: "spiffe://example.org/w", aud: []string{aud1}, exp: exp, iat: iat}
		if aud2 != "" {
			c.aud = append(c.aud, aud2)
		}
		ours, err := signJWT(alg, "k", key, key.Public(), c)
		if err != nil {
			t.Fatal(err)
		}
		if want := goJoseToken(t, alg, "k", key, c); signedPart(ours) != signedPart(want) {
			t.Fatalf("header.payload differ from go-jose's:\n got %s\nwant %s", signedPart(ours), signedPart(want))
		}
	})
}
