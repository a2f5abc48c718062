package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
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

// SignJWTSVID signs a JWT-SVID with the active JWT key. The header carries
// the key's kid as published in the bundle and typ JWT; the claims are sub,
// aud, exp, iat and, when configured, iss.
func (m *Manager) SignJWTSVID(ctx context.Context, p JWTSVIDParams) (_ string, err error) {
	defer func() {
		if err == nil {
			m.signed("jwt_svid")
		}
	}()
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
	alg, ok := jwsAlgorithms[slot.key.Type()]
	if !ok {
		return "", fmt.Errorf("ca: sign JWT-SVID: no JWT algorithm for key type %s", slot.key.Type())
	}
	if len(m.cfg.Composers) > 0 {
		return m.signComposedJWTSVID(ctx, p, alg, slot, now, exp)
	}
	token, err := signJWT(alg, slot.kid, slot.key, slot.pub, jwtClaims{
		iss: m.cfg.JWTIssuer, sub: p.SPIFFEID.String(), aud: p.Audience, exp: exp.Unix(), iat: now.Unix(),
	})
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: %w", err)
	}
	return token, nil
}
