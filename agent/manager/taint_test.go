package manager

import (
	"crypto/x509"
	"encoding/base64"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
)

func TestChainTainted(t *testing.T) {
	oldRoot, err := testpki.NewRoot("old")
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := testpki.NewRoot("new")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := oldRoot.Intermediate("old intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leafOld, _, err := oldRoot.Issue(testpki.Leaf{CommonName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	leafInter, _, err := inter.Issue(testpki.Leaf{CommonName: "b"})
	if err != nil {
		t.Fatal(err)
	}
	leafNew, _, err := newRoot.Issue(testpki.Leaf{CommonName: "c"})
	if err != nil {
		t.Fatal(err)
	}
	b := &types.Bundle{
		X509Authorities: []*types.X509Certificate{{Asn1: oldRoot.Cert.Raw, Tainted: true}, {Asn1: newRoot.Cert.Raw}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "bad", Tainted: true}, {KeyId: "good"}},
	}
	taint := taintedIn(b)
	for name, tc := range map[string]struct {
		chain []*x509.Certificate
		want  bool
	}{
		"signed by the tainted root":     {[]*x509.Certificate{leafOld}, true},
		"through an intermediate of it":  {[]*x509.Certificate{leafInter, inter.Cert}, true},
		"signed by the untainted root":   {[]*x509.Certificate{leafNew}, false},
		"the tainted root itself":        {[]*x509.Certificate{oldRoot.Cert}, true},
		"empty chain":                    {nil, false},
		"leaf of the intermediate alone": {[]*x509.Certificate{leafInter}, false},
	} {
		if got := taint.chainTainted(tc.chain); got != tc.want {
			t.Errorf("%s: chainTainted = %v, want %v", name, got, tc.want)
		}
		if len(tc.chain) == 0 {
			continue
		}
		if got := taint.svidTainted(heldSVID(t, tc.chain, oldRoot.Key)); got != tc.want {
			t.Errorf("%s: svidTainted = %v, want %v", name, got, tc.want)
		}
	}
	if (*taintSet)(nil).chainTainted([]*x509.Certificate{leafOld}) || !(*taintSet)(nil).empty() {
		t.Error("nil set taints")
	}
	if !taintedIn(&types.Bundle{X509Authorities: []*types.X509Certificate{{Asn1: newRoot.Cert.Raw}}}).empty() {
		t.Error("untainted bundle gives a taint set")
	}

	// An SVID from the tainted authority is due now, one from the new
	// authority only at half-life.
	now := time.Now()
	e := &types.Entry{Id: "e", SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: "/w"}}
	svids := map[string]cache.Identity{"e": {Entry: e, SVID: heldSVID(t, []*x509.Certificate{leafOld}, oldRoot.Key)}}
	if !needsSVID(e, svids["e"], now, taint) {
		t.Error("tainted SVID not renewed")
	}
	if countTainted(svids, taint) != 1 {
		t.Error("tainted SVID not counted")
	}

	jwt := func(header string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(header)) + ".e30.sig"
	}
	if !taint.jwtTainted(jwt(`{"alg":"ES256","kid":"bad"}`)) || taint.jwtTainted(jwt(`{"alg":"ES256","kid":"good"}`)) {
		t.Error("JWT taint by kid")
	}
	if taint.jwtTainted("not a token") || taint.jwtTainted(jwt("{")) {
		t.Error("malformed token counted as tainted")
	}
}

// FuzzJWTKeyID: the kid is read from a token the server sent.
func FuzzJWTKeyID(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6ImFiYyJ9.e30.sig")
	f.Add("")
	f.Add(".")
	f.Add("!!!.x")
	f.Fuzz(func(t *testing.T, token string) {
		kid, err := jwtKeyID(token)
		if err != nil && kid != "" {
			t.Fatal("kid with an error")
		}
	})
}

// BenchmarkSVIDTainted is the check every held SVID gets on every sync
// while an authority is tainted, for an SVID that the tainted authority
// did not sign (after the rotation, nearly all of them).
func BenchmarkSVIDTainted(b *testing.B) {
	oldRoot, err := testpki.NewRoot("old")
	if err != nil {
		b.Fatal(err)
	}
	newRoot, err := testpki.NewRoot("new")
	if err != nil {
		b.Fatal(err)
	}
	leaf, _, err := newRoot.Issue(testpki.Leaf{CommonName: "c"})
	if err != nil {
		b.Fatal(err)
	}
	taint := taintedIn(&types.Bundle{X509Authorities: []*types.X509Certificate{{Asn1: oldRoot.Cert.Raw, Tainted: true}, {Asn1: newRoot.Cert.Raw}}})
	svid := heldSVID(b, []*x509.Certificate{leaf}, newRoot.Key)
	for b.Loop() {
		if taint.svidTainted(svid) {
			b.Fatal("tainted")
		}
	}
}
