package workloadapi

import (
	"testing"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzValidateJWT feeds arbitrary tokens (what ValidateJWTSVID receives from
// any local process) to the validation path: it must never panic, and it
// must never accept a token not signed by the bundle's key.
func FuzzValidateJWT(f *testing.F) {
	ca := wltest.NewCA(f, td)
	set := jwtbundle.NewSet(ca.Bundle().JWTBundle())
	good := wltest.SignJWT(f, ca.JWTKey, ca.JWTKID, spiffeid.RequireFromString("spiffe://example.org/w"), []string{"aud"}, map[string]any{"n": 1})
	f.Add(good, "aud")
	f.Add(good[:len(good)-3], "aud")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93In0.", "aud")
	f.Add("a.b.c", "")
	f.Fuzz(func(t *testing.T, token, aud string) {
		resp, err := validateJWT(token, aud, set, td)
		if err != nil {
			return
		}
		// Only the signed token (or a base64 re-encoding of the same bytes)
		// may verify; anything with other content is a forgery.
		if resp.SpiffeId != "spiffe://example.org/w" || resp.Claims.Fields["n"].GetNumberValue() != 1 {
			t.Fatalf("accepted a token with content the CA never signed: %q -> %v", token, resp)
		}
	})
}
