package sshpop

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/ssh"
)

// FuzzRespond: the challenge comes from the server over the network; a
// malformed one must be refused without panicking.
func FuzzRespond(f *testing.F) {
	for _, s := range []string{`{"Nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, `{"Nonce":"AA=="}`, `{}`, `null`, "\x00"} {
		f.Add([]byte(s))
	}
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(k)
	if err != nil {
		f.Fatal(err)
	}
	cert := &ssh.Certificate{Key: signer.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"h"}}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		f.Fatal(err)
	}
	a, err := NewFromSigner(cert, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = a.Respond(context.Background(), b)
	})
}
