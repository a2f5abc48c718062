package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// JWTSVIDParams describes a JWT-SVID to sign.
type JWTSVIDParams struct {
	SPIFFEID spiffeid.ID
	// Audience must hold at least one non-empty value.
	Audience []string
	// TTL is the requested lifetime; 0 means Config.JWTSVIDTTL. The token
	// never outlives the signing key.
	TTL time.Duration
}

func jwtAlgorithm(t keymanager.KeyType) (jose.SignatureAlgorithm, error) {
	switch t {
	case keymanager.ECP256:
		return jose.ES256, nil
	case keymanager.ECP384:
		return jose.ES384, nil
	case keymanager.RSA2048, keymanager.RSA4096:
		return jose.RS256, nil
	}
	return "", fmt.Errorf("no JWT algorithm for key type %s", t)
}

// SignJWTSVID signs a JWT-SVID with the active JWT key. The header carries
// the key's kid as published in the bundle and typ JWT; the claims are sub,
// aud, exp, iat and, when configured, iss.
func (m *Manager) SignJWTSVID(ctx context.Context, p JWTSVIDParams) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	if err := m.checkID(p.SPIFFEID); err != nil {
		return "", err
	}
	if len(p.Audience) == 0 {
		return "", fmt.Errorf("%w: JWT-SVID needs at least one audience", ErrInvalidParams)
	}
	for _, a := range p.Audience {
		if a == "" {
			return "", fmt.Errorf("%w: empty audience", ErrInvalidParams)
		}
	}
	if p.TTL < 0 {
		return "", fmt.Errorf("%w: negative TTL", ErrInvalidParams)
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = m.cfg.JWTSVIDTTL
	}

	// The slot and the time are read together under the lock: read apart,
	// a rotation and a clock step between them could pair a replaced slot
	// with a time past its expiry and refuse to sign on a healthy CA.
	m.mu.RLock()
	slot := activeOf(m.jwt[:])
	now := m.cfg.Clock()
	m.mu.RUnlock()
	if slot == nil {
		return "", errors.New("ca: sign JWT-SVID: no active JWT key")
	}
	exp := now.Add(ttl)
	if exp.After(slot.notAfter) {
		exp = slot.notAfter
	}
	if !exp.After(now) {
		return "", fmt.Errorf("ca: sign JWT-SVID: active JWT key expired at %s", slot.notAfter)
	}
	alg, err := jwtAlgorithm(slot.key.Type())
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	// The opaque signer only ever asks the key manager for a signature, so
	// a hardware key that cannot be exported works the same.
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: cryptosigner.Opaque(slot.key)},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), slot.kid),
	)
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	claims := jwt.Claims{
		Subject:  p.SPIFFEID.String(),
		Audience: jwt.Audience(p.Audience),
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(now),
		Issuer:   m.cfg.JWTIssuer,
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	// Check the signature against the published public key before the
	// token leaves, as for X.509-SVIDs (but for in-process keys).
	if ip, ok := slot.key.(InProcessKey); ok && ip.InProcess() {
		return token, nil
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: reparse: %w", err)
	}
	var check jwt.Claims
	if err := parsed.Claims(slot.pub, &check); err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: signature does not verify against the published key: %w", err)
	}
	return token, nil
}
