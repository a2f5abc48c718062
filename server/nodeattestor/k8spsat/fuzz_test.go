package k8spsat

import (
	"strings"
	"testing"
)

// FuzzParseAttestationData: the payload comes from an unauthenticated
// agent; parsing must never panic, and what it accepts must name a
// cluster and carry a token within the size bound.
func FuzzParseAttestationData(f *testing.F) {
	for _, s := range []string{
		`{"cluster":"prod","token":"eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}`,
		`{"cluster":"","token":"x"}`, `{"cluster":"a"}`, `null`, `[]`, `{"cluster":1}`, "\x00", "",
		`{"cluster":"a","token":"b","cluster":"c"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseAttestationData(b)
		if err != nil {
			return
		}
		if d.Cluster == "" || d.Token == "" || len(b) > MaxPayload {
			t.Fatalf("accepted %q as %+v", b, d)
		}
	})
}

// FuzzServiceAccount: the username comes from the API server but names
// what the allow-list is checked against; no split may smuggle a colon
// into either part.
func FuzzServiceAccount(f *testing.F) {
	for _, s := range []string{"system:serviceaccount:spire:spire-agent", "system:serviceaccount::x", "system:serviceaccount:a:b:c", "system:node:x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		ns, name, err := serviceAccount(u)
		if err != nil {
			return
		}
		if ns == "" || name == "" || strings.Contains(ns, ":") || strings.Contains(name, ":") || u != "system:serviceaccount:"+ns+":"+name {
			t.Fatalf("%q split into %q %q", u, ns, name)
		}
	})
}
