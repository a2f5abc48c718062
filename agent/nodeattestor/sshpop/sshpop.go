// Package sshpop attests an agent with the machine's SSH host certificate,
// compatible with SPIRE's "sshpop" agent plugin: it sends the certificate,
// then proves possession of the host key by signing the server's nonce
// combined with a fresh nonce of its own.
package sshpop

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"golang.org/x/crypto/ssh"
)

// Type is the attestation type.
const Type = "sshpop"

// Defaults are SPIRE's: the RSA host key sshd generates.
const (
	DefaultHostKeyPath  = "/etc/ssh/ssh_host_rsa_key"
	DefaultHostCertPath = "/etc/ssh/ssh_host_rsa_key-cert.pub"
)

const (
	nonceSize    = 32
	maxChallenge = 4 << 10
)

// PluginData is the plugin_data block of NodeAttestor "sshpop".
type PluginData struct {
	HostKeyPath  string `hcl:"host_key_path"`
	HostCertPath string `hcl:"host_cert_path"`
}

// Attestor proves possession of an SSH host key.
type Attestor struct {
	cert   *ssh.Certificate
	signer ssh.Signer
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New loads the host key and certificate and checks they match.
func New(d PluginData) (*Attestor, error) {
	if d.HostKeyPath == "" {
		d.HostKeyPath = DefaultHostKeyPath
	}
	if d.HostCertPath == "" {
		d.HostCertPath = DefaultHostCertPath
	}
	kb, err := os.ReadFile(d.HostKeyPath)
	if err != nil {
		return nil, fmt.Errorf("sshpop: host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(kb)
	if err != nil {
		return nil, fmt.Errorf("sshpop: host key %s: %w", d.HostKeyPath, err)
	}
	cb, err := os.ReadFile(d.HostCertPath)
	if err != nil {
		return nil, fmt.Errorf("sshpop: host certificate: %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(cb)
	if err != nil {
		return nil, fmt.Errorf("sshpop: host certificate %s: %w", d.HostCertPath, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("sshpop: %s is a key, not a certificate", d.HostCertPath)
	}
	return NewFromSigner(cert, signer)
}

// NewFromSigner returns an Attestor for a certificate and its host key.
func NewFromSigner(cert *ssh.Certificate, signer ssh.Signer) (*Attestor, error) {
	if _, err := ssh.NewCertSigner(cert, signer); err != nil {
		return nil, fmt.Errorf("sshpop: %w", err)
	}
	return &Attestor{cert: cert, signer: signer}, nil
}

// Type returns "sshpop".
func (*Attestor) Type() string { return Type }

// AttestationData is {"Certificate": <SSH wire certificate>}.
func (a *Attestor) AttestationData(context.Context, []byte) ([]byte, error) {
	b, err := json.Marshal(struct{ Certificate []byte }{a.cert.Marshal()})
	if err != nil {
		return nil, fmt.Errorf("sshpop: encode: %w", err)
	}
	return b, nil
}

// Respond signs SHA-256(server nonce || own nonce) with the host key,
// using rsa-sha2-256 rather than SHA-1 for RSA keys.
func (a *Attestor) Respond(_ context.Context, challenge []byte) ([]byte, error) {
	if len(challenge) > maxChallenge {
		return nil, errors.New("sshpop: challenge too large")
	}
	var ch struct{ Nonce []byte }
	if err := json.Unmarshal(challenge, &ch); err != nil {
		return nil, fmt.Errorf("sshpop: challenge: %w", err)
	}
	if len(ch.Nonce) != nonceSize {
		return nil, fmt.Errorf("sshpop: server nonce must be %d bytes", nonceSize)
	}
	own := make([]byte, nonceSize)
	if _, err := rand.Read(own); err != nil {
		return nil, fmt.Errorf("sshpop: nonce: %w", err)
	}
	sum := sha256.Sum256(append(append([]byte(nil), ch.Nonce...), own...))
	var sig *ssh.Signature
	var err error
	if as, ok := a.signer.(ssh.AlgorithmSigner); ok && a.signer.PublicKey().Type() == ssh.KeyAlgoRSA {
		sig, err = as.SignWithAlgorithm(rand.Reader, sum[:], ssh.KeyAlgoRSASHA256)
	} else {
		sig, err = a.signer.Sign(rand.Reader, sum[:])
	}
	if err != nil {
		return nil, fmt.Errorf("sshpop: sign: %w", err)
	}
	out, err := json.Marshal(struct {
		Nonce     []byte
		Signature *ssh.Signature
	}{own, sig})
	if err != nil {
		return nil, fmt.Errorf("sshpop: encode response: %w", err)
	}
	return out, nil
}
