package k8s

import (
	"testing"
	"time"
)

// FuzzReview: TokenReview verifies attacker-supplied JWTs; no variation
// of a genuine token may authenticate other claims than the ones the
// cluster signed, and nothing may panic.
func FuzzReview(f *testing.F) {
	c, err := Start(Options{Algorithm: "ES256"})
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	c.PutPod(Pod{Namespace: "ns", Name: "p", UID: "u", ServiceAccount: "sa"})
	tok, err := c.MintToken("ns", "p", []string{"a"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok[:len(tok)-4] + "AAAA")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		u, _, err := c.review(s, []string{"a"})
		if err == nil && (u.Username != "system:serviceaccount:ns:sa" || u.Extra[ExtraPodUID][0] != "u") {
			t.Fatalf("authenticated forged claims %+v from %q", u, s)
		}
	})
}
