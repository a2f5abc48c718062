package sshpop_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	agentpop "github.com/spiffe-hw/spire-hw/agent/nodeattestor/sshpop"
	serverpop "github.com/spiffe-hw/spire-hw/server/nodeattestor/sshpop"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"
)

// TestAgentAgainstVerifier: host keys and certificates as ssh-keygen
// writes them (OpenSSH private key, authorized_keys-format certificate)
// go through the agent and the server verifier, for each host key type.
func TestAgentAgainstVerifier(t *testing.T) {
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := serverpop.New(serverpop.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Authorities: []ssh.PublicKey{ca.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for name, key := range map[string]crypto.Signer{"rsa": rsaKey, "ecdsa": ecKey, "ed25519": edKey} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			blk, err := ssh.MarshalPrivateKey(key, "host key")
			if err != nil {
				t.Fatal(err)
			}
			signer, _ := ssh.NewSignerFromKey(key)
			cert := &ssh.Certificate{Key: signer.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"h1"},
				ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
			if err := cert.SignCert(rand.Reader, ca); err != nil {
				t.Fatal(err)
			}
			d := agentpop.PluginData{HostKeyPath: filepath.Join(dir, "ssh_host_key"), HostCertPath: filepath.Join(dir, "ssh_host_key-cert.pub")}
			if err := os.WriteFile(d.HostKeyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d.HostCertPath, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := agentpop.New(d)
			if err != nil {
				t.Fatal(err)
			}
			p, err := a.AttestationData(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Attest(context.Background(), p, nil, a.Respond)
			if err != nil {
				t.Fatal(err)
			}
			if want := "spiffe://example.org/spire/agent/sshpop/" + serverpop.Fingerprint(cert); res.AgentID.String() != want {
				t.Fatalf("agent ID %s, want %s", res.AgentID, want)
			}
			// The certificate of another key is refused at load.
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			ob, _ := ssh.MarshalPrivateKey(other, "")
			_ = os.WriteFile(d.HostKeyPath, pem.EncodeToMemory(ob), 0o600)
			if _, err := agentpop.New(d); err == nil {
				t.Error("accepted a certificate for another key")
			}
		})
	}
	if _, err := agentpop.New(agentpop.PluginData{HostKeyPath: "/nonexistent", HostCertPath: "/nonexistent"}); err == nil {
		t.Error("accepted missing files")
	}
}
