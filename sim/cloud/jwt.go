package cloud

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// signingKey is an RS256 key with its key ID, as the clouds publish them.
type signingKey struct {
	key *rsa.PrivateKey
	kid string
}

func newSigningKey() (*signingKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("cloud: generate key: %w", err)
	}
	sum := sha256.Sum256(key.PublicKey.N.Bytes())
	return &signingKey{key: key, kid: base64.RawURLEncoding.EncodeToString(sum[:12])}, nil
}

// mint signs claims as a compact RS256 JWT carrying the key ID.
func (k *signingKey) mint(claims any) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("cloud: signer: %w", err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("cloud: sign token: %w", err)
	}
	return tok, nil
}

func (k *signingKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.key.PublicKey, KeyID: k.kid, Algorithm: string(jose.RS256), Use: "sig"}
}

// bearerTokens are the opaque access tokens a simulated token endpoint
// issued, which its API then accepts.
type bearerTokens struct {
	mu sync.Mutex
	m  map[string]bool
}

func (b *bearerTokens) issue() string {
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	t := base64.RawURLEncoding.EncodeToString(buf)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]bool{}
	}
	b.m[t] = true
	return t
}

func (b *bearerTokens) valid(r *http.Request) bool {
	t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	b.mu.Lock()
	defer b.mu.Unlock()
	return ok && b.m[t]
}
