// Package x509pop attests an agent with a certificate and key provisioned
// out of band, compatible with SPIRE's "x509pop" agent plugin: it sends
// the certificate chain, then proves possession of the key by signing the
// server's nonce combined with a fresh nonce of its own.
package x509pop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

// Type is the attestation type.
const Type = "x509pop"

const (
	nonceSize    = 32
	maxChallenge = 4 << 10
)

// PluginData is the plugin_data block of NodeAttestor "x509pop".
type PluginData struct {
	// PrivateKeyPath is a PEM PKCS#1, SEC 1 or PKCS#8 key.
	PrivateKeyPath string `hcl:"private_key_path"`
	// CertificatePath holds the leaf first, then any intermediates.
	CertificatePath string `hcl:"certificate_path"`
	// IntermediatesPath holds more intermediates, appended to the chain.
	IntermediatesPath string `hcl:"intermediates_path"`
}

// Attestor proves possession of a certificate's key.
type Attestor struct {
	chain [][]byte
	key   crypto.Signer
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New loads the certificate chain and key, and checks they match.
func New(d PluginData) (*Attestor, error) {
	if d.PrivateKeyPath == "" || d.CertificatePath == "" {
		return nil, errors.New("x509pop: private_key_path and certificate_path are required")
	}
	chain, err := readCerts(d.CertificatePath)
	if err != nil {
		return nil, err
	}
	if d.IntermediatesPath != "" {
		more, err := readCerts(d.IntermediatesPath)
		if err != nil {
			return nil, err
		}
		chain = append(chain, more...)
	}
	key, err := readKey(d.PrivateKeyPath)
	if err != nil {
		return nil, err
	}
	return NewFromKey(chain, key)
}

// NewFromKey returns an Attestor for a DER chain (leaf first) and the
// leaf's key, which may live in an HSM.
func NewFromKey(chain [][]byte, key crypto.Signer) (*Attestor, error) {
	if len(chain) == 0 {
		return nil, errors.New("x509pop: no certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("x509pop: certificate: %w", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := key.Public().(equaler); !ok || !pk.Equal(leaf.PublicKey) {
		return nil, errors.New("x509pop: the private key is not the certificate's")
	}
	switch key.Public().(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("x509pop: unsupported key type %T (RSA or ECDSA)", key.Public())
	}
	return &Attestor{chain: chain, key: key}, nil
}

func readCerts(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("x509pop: %w", err)
	}
	var out [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, blk.Bytes)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("x509pop: %s holds no PEM certificate", path)
	}
	return out, nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("x509pop: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("x509pop: %s holds no PEM key", path)
	}
	var k any
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("x509pop: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("x509pop: %s: key type %T cannot sign", path, k)
	}
	return s, nil
}

// Type returns "x509pop".
func (*Attestor) Type() string { return Type }

// AttestationData is {"certificates": [leaf, intermediates...]}.
func (a *Attestor) AttestationData(context.Context, []byte) ([]byte, error) {
	b, err := json.Marshal(struct {
		Certificates [][]byte `json:"certificates"`
	}{a.chain})
	if err != nil {
		return nil, fmt.Errorf("x509pop: encode: %w", err)
	}
	return b, nil
}

type nonceMsg struct {
	Nonce []byte `json:"nonce"`
}

// Respond signs SHA-256(server nonce || own nonce) with the key.
func (a *Attestor) Respond(_ context.Context, challenge []byte) ([]byte, error) {
	if len(challenge) > maxChallenge {
		return nil, errors.New("x509pop: challenge too large")
	}
	var ch struct {
		RSA   *nonceMsg `json:"rsa_signature"`
		ECDSA *nonceMsg `json:"ecdsa_signature"`
	}
	if err := json.Unmarshal(challenge, &ch); err != nil {
		return nil, fmt.Errorf("x509pop: challenge: %w", err)
	}
	own := make([]byte, nonceSize)
	if _, err := rand.Read(own); err != nil {
		return nil, fmt.Errorf("x509pop: nonce: %w", err)
	}
	digest := func(server []byte) ([]byte, error) {
		if len(server) != nonceSize {
			return nil, fmt.Errorf("x509pop: server nonce must be %d bytes", nonceSize)
		}
		sum := sha256.Sum256(append(append([]byte(nil), server...), own...))
		return sum[:], nil
	}
	var resp any
	switch _, isRSA := a.key.Public().(*rsa.PublicKey); {
	case isRSA && ch.RSA != nil && ch.ECDSA == nil:
		d, err := digest(ch.RSA.Nonce)
		if err != nil {
			return nil, err
		}
		sig, err := a.key.Sign(rand.Reader, d, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			return nil, fmt.Errorf("x509pop: sign: %w", err)
		}
		resp = map[string]any{"rsa_signature": map[string][]byte{"nonce": own, "signature": sig}}
	case !isRSA && ch.ECDSA != nil && ch.RSA == nil:
		d, err := digest(ch.ECDSA.Nonce)
		if err != nil {
			return nil, err
		}
		der, err := a.key.Sign(rand.Reader, d, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("x509pop: sign: %w", err)
		}
		r, s, err := parseECDSASig(der)
		if err != nil {
			return nil, err
		}
		resp = map[string]any{"ecdsa_signature": map[string][]byte{"nonce": own, "r": r, "s": s}}
	default:
		return nil, errors.New("x509pop: challenge does not match the key type")
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("x509pop: encode response: %w", err)
	}
	return out, nil
}
