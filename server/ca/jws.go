package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// A JWT-SVID is a compact JWS with a fixed header and five claims. It is
// written here directly rather than through go-jose's signer, whose
// per-call setup and reflective JSON cost as much as the signature. The
// header and claims are the bytes go-jose writes for the same token
// (TestJWTMatchesGoJose and FuzzJWTClaims hold it to that), so verifiers
// see no difference.

// jwsAlgorithm is how a JWT key type signs: the JWS alg name, the digest,
// and for ECDSA the byte length of each of r and s.
type jwsAlgorithm struct {
	name    string
	hash    crypto.Hash
	ecdsaSz int // 0 for RSA
}

// jwsAlgorithms are the algorithms SPIRE uses for each key type.
var jwsAlgorithms = map[keymanager.KeyType]jwsAlgorithm{
	keymanager.ECP256:  {"ES256", crypto.SHA256, 32},
	keymanager.ECP384:  {"ES384", crypto.SHA384, 48},
	keymanager.RSA2048: {"RS256", crypto.SHA256, 0},
	keymanager.RSA4096: {"RS256", crypto.SHA256, 0},
}

// jwtClaims are a JWT-SVID's claims; iss is left out when empty.
type jwtClaims struct {
	iss, sub string
	aud      []string
	exp, iat int64
}

// appendJSON appends the claims as go-jose's JWT builder writes them: keys
// sorted (aud, exp, iat, iss, sub), aud a string when there is one.
func (c jwtClaims) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"aud":`...)
	switch len(c.aud) {
	case 0:
		return nil, errors.New("no audience")
	case 1:
		b = appendJSONString(b, c.aud[0])
	default:
		b = append(b, '[')
		for i, a := range c.aud {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a)
		}
		b = append(b, ']')
	}
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.exp, 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.iat, 10)
	if c.iss != "" {
		b = append(b, `,"iss":`...)
		b = appendJSONString(b, c.iss)
	}
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, c.sub)
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string the way go-jose's JWT builder
// leaves it: quotes, backslashes, control characters, <, >, & and U+2028/9
// escaped (\n, \r and \t short, the rest as \u00XX), every byte that is not
// UTF-8 replaced by U+FFFD, everything else as is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != '\\' && c != '"' && c != '<' && c != '>' && c != '&':
				b = append(b, c)
			case c == '\\' || c == '"':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = utf8.AppendRune(b, utf8.RuneError)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// jwsHeader is the protected header go-jose writes: its keys sorted.
func jwsHeader(alg, kid string) []byte {
	b := append([]byte(`{"alg":`), appendJSONString(nil, alg)...)
	b = append(b, `,"kid":`...)
	b = appendJSONString(b, kid)
	return append(b, `,"typ":"JWT"}`...)
}

// signJWT writes and signs a compact JWS. Keys that do not sign with Go's
// own crypto in this process have the signature checked against the
// published public key before the token leaves.
func signJWT(alg jwsAlgorithm, kid string, key crypto.Signer, pub crypto.PublicKey, c jwtClaims) (string, error) {
	payload, err := c.appendJSON(make([]byte, 0, 256))
	if err != nil {
		return "", err
	}
	return signJWS(alg, kid, key, pub, payload)
}

// signJWS is signJWT for a payload already encoded: the composed claims of
// a credential composer.
func signJWS(alg jwsAlgorithm, kid string, key crypto.Signer, pub crypto.PublicKey, payload []byte) (string, error) {
	enc := base64.RawURLEncoding
	header := jwsHeader(alg.name, kid)
	sigLen := 512
	if alg.ecdsaSz > 0 {
		sigLen = 2 * alg.ecdsaSz
	}
	out := make([]byte, 0, enc.EncodedLen(len(header))+enc.EncodedLen(len(payload))+enc.EncodedLen(sigLen)+2)
	out = enc.AppendEncode(out, header)
	out = append(out, '.')
	out = enc.AppendEncode(out, payload)
	h := alg.hash.New()
	h.Write(out)
	digest := h.Sum(nil)
	sig, err := key.Sign(rand.Reader, digest, alg.hash)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	if ip, ok := key.(InProcessKey); !ok || !ip.InProcess() {
		if err := verifyJWS(alg, pub, digest, sig); err != nil {
			return "", fmt.Errorf("signature does not verify against the published key: %w", err)
		}
	}
	if alg.ecdsaSz > 0 {
		if sig, err = ecdsaRawSignature(sig, alg.ecdsaSz); err != nil {
			return "", err
		}
	}
	out = append(out, '.')
	return string(enc.AppendEncode(out, sig)), nil
}

func verifyJWS(alg jwsAlgorithm, pub crypto.PublicKey, digest, sig []byte) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if alg.ecdsaSz == 0 || !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA signature invalid")
		}
		return nil
	case *rsa.PublicKey:
		if alg.ecdsaSz != 0 {
			return errors.New("RSA key for an ECDSA algorithm")
		}
		return rsa.VerifyPKCS1v15(k, alg.hash, digest, sig)
	}
	return fmt.Errorf("unsupported public key %T", pub)
}

// ecdsaRawSignature turns an ASN.1 ECDSA signature into JWS's fixed-size
// r || s (RFC 7518 3.4).
func ecdsaRawSignature(der []byte, size int) ([]byte, error) {
	var r, s big.Int
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) || !seq.Empty() {
		return nil, errors.New("malformed ECDSA signature from the key")
	}
	if r.Sign() <= 0 || s.Sign() <= 0 || r.BitLen() > 8*size || s.BitLen() > 8*size {
		return nil, errors.New("ECDSA signature out of range for the curve")
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}
