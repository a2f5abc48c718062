package sshpop

import (
	"testing"
)

// FuzzParseAttestationData: the payload comes from an unauthenticated
// agent; what parses must be a certificate with a principal.
func FuzzParseAttestationData(f *testing.F) {
	for _, s := range []string{`{"Certificate":"AAAAC3NzaC1lZDI1NTE5AAAAIEAWPAsKJ/qMYUIBeH7BLMRCE/bkUvMHX+7OZhANk45S"}`,
		`{"Certificate":"AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t"}`, `{"Certificate":""}`, `{}`, `[]`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAttestationData(b)
		if err != nil {
			return
		}
		if len(c.ValidPrincipals) == 0 {
			t.Fatalf("accepted a certificate without principals: %q", b)
		}
	})
}

// FuzzParseResponse: the response comes from the agent; accepted ones
// carry a signature.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{`{"Nonce":"AA==","Signature":{"Format":"ssh-ed25519","Blob":"AA=="}}`, `{"Signature":null}`, `{}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err == nil && r.Signature == nil {
			t.Fatal("accepted a response without signature")
		}
	})
}
