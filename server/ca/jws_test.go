package ca

import (
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// goJoseToken is the token go-jose writes for the same header and claims.
func goJoseToken(t testing.TB, alg jwsAlgorithm, kid string, key crypto.Signer, c jwtClaims) string {
	t.Helper()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg.name), Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid),
	)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: c.iss, Subject: c.sub, Audience: jwt.Audience(c.aud),
		Expiry: jwt.NewNumericDate(timeUnix(c.exp)), IssuedAt: jwt.NewNumericDate(timeUnix(c.iat)),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }

// signedPart is a compact JWS without its signature.
func signedPart(tok string) string { return tok[:strings.LastIndexByte(tok, '.')] }

func TestJWTMatchesGoJose(t *testing.T) {
	claims := map[string]jwtClaims{
		"one audience":    {sub: "spiffe://example.org/w", aud: []string{"db"}, exp: 1795000300, iat: 1795000000},
		"two audiences":   {sub: "spiffe://example.org/w", aud: []string{"db", "backup"}, exp: 1795000300, iat: 1795000000},
		"issuer":          {iss: "https://oidc.example.org", sub: "spiffe://example.org/ns/a/sa/b", aud: []string{"x"}, exp: 1795000300, iat: 1795000000},
		"escaped strings": {sub: "spiffe://example.org/w", aud: []string{`a"b\c`, "<&>", "tab\there", "é\u2028", "\xff"}, exp: 1, iat: 0},
	}
	for _, kt := range keymanager.KeyTypes {
		key, err := keymanager.GenerateSigner(kt)
		if err != nil {
			t.Fatal(err)
		}
		alg := jwsAlgorithms[kt]
		for name, c := range claims {
			t.Run(kt.String()+"/"+name, func(t *testing.T) {
				ours, err := signJWT(alg, "kid-1", outOfProcess{key}, key.Public(), c)
				if err != nil {
					t.Fatal(err)
				}
				if want := goJoseToken(t, alg, "kid-1", key, c); signedPart(ours) != signedPart(want) {
					t.Fatalf("header.payload differ from go-jose's:\n got %s\nwant %s", signedPart(ours), signedPart(want))
				}
				tok, err := jwt.ParseSigned(ours, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg.name)})
				if err != nil {
					t.Fatal(err)
				}
				var got jwt.Claims
				if err := tok.Claims(key.Public(), &got); err != nil {
					t.Fatalf("go-jose does not verify the signature: %v", err)
				}
				if got.Subject != c.sub || got.Expiry.Time().Unix() != c.exp {
					t.Fatalf("claims = %+v", got)
				}
			})
		}
	}
}

func TestSignJWTRefusesWrongKey(t *testing.T) {
	c := jwtClaims{sub: "spiffe://example.org/w", aud: []string{"a"}, exp: 2, iat: 1}
	for _, kt := range keymanager.KeyTypes {
		key, _ := keymanager.GenerateSigner(kt)
		other, _ := keymanager.GenerateSigner(kt)
		if _, err := signJWT(jwsAlgorithms[kt], "k", wrongKey{Signer: key, other: other}, key.Public(), c); err == nil {
			t.Fatalf("%s: a signer using the wrong key got a token out", kt)
		}
	}
}

func TestECDSARawSignatureRefusesGarbage(t *testing.T) {
	for _, sig := range [][]byte{nil, {0x30, 0}, {0x30, 3, 2, 1, 1}, append([]byte{0x30, 6, 2, 1, 1, 2, 1, 1}, 0)} {
		if _, err := ecdsaRawSignature(sig, 32); err == nil {
			t.Errorf("ecdsaRawSignature(%x) accepted", sig)
		}
	}
	if _, err := ecdsaRawSignature([]byte{0x30, 6, 2, 1, 1, 2, 1, 1}, 32); err != nil {
		t.Errorf("a small valid signature refused: %v", err)
	}
}
