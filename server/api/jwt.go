package api

import (
	"fmt"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

var jwtAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}

// jwtTimes reads iat and exp of a token this server has just signed, so the
// response can carry them without a second source of truth.
func jwtTimes(token string) (iat, exp int64, err error) {
	t, err := jwt.ParseSigned(token, jwtAlgs)
	if err != nil {
		return 0, 0, err
	}
	var c jwt.Claims
	if err := t.UnsafeClaimsWithoutVerification(&c); err != nil {
		return 0, 0, err
	}
	if c.Expiry == nil || c.IssuedAt == nil {
		return 0, 0, fmt.Errorf("token lacks exp or iat")
	}
	return int64(*c.IssuedAt), int64(*c.Expiry), nil
}
