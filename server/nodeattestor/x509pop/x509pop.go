// Package x509pop verifies X.509 proof-of-possession node attestation,
// compatible with SPIRE's "x509pop" plugin: the agent presents a
// certificate (and intermediates) issued out of band; the server checks
// the chain against its CA bundle and has the agent sign a fresh server
// nonce combined with a nonce of its own, proving it holds the key.
//
// Agents are named spiffe://<td>/spire/agent/x509pop/<SHA-1 fingerprint of
// the leaf>, or as agent_path_template says.
package x509pop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SPIRE names agents by the SHA-1 fingerprint.
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PluginName is the attestation type, the selector type and the plugin
// name in configs.
const PluginName = "x509pop"

// Wire-format bounds. A chain is a few kilobytes; a response is a nonce
// and one signature.
const (
	MaxPayload  = 64 << 10
	MaxResponse = 4 << 10
	NonceSize   = 32
)

// DefaultMaxIntermediates bounds the chain when the config does not.
const DefaultMaxIntermediates = 4

// AttestationData is the agent's payload: the DER leaf first, then
// intermediates (SPIRE's wire format).
type AttestationData struct {
	Certificates [][]byte `json:"certificates"`
}

// Challenge is what the server sends; exactly one member is set, chosen by
// the leaf's key type.
type Challenge struct {
	RSASignature   *NonceChallenge `json:"rsa_signature,omitempty"`
	ECDSASignature *NonceChallenge `json:"ecdsa_signature,omitempty"`
}

// NonceChallenge carries the server nonce.
type NonceChallenge struct {
	Nonce []byte `json:"nonce"`
}

// Response is the agent's answer; the member set must match the challenge.
type Response struct {
	RSASignature   *RSAResponse   `json:"rsa_signature,omitempty"`
	ECDSASignature *ECDSAResponse `json:"ecdsa_signature,omitempty"`
}

// RSAResponse is an RSASSA-PSS (SHA-256) signature over CombineNonces.
type RSAResponse struct {
	Nonce     []byte `json:"nonce"`
	Signature []byte `json:"signature"`
}

// ECDSAResponse is an ECDSA signature over CombineNonces.
type ECDSAResponse struct {
	Nonce []byte `json:"nonce"`
	R     []byte `json:"r"`
	S     []byte `json:"s"`
}

// CombineNonces is the digest the agent signs: SHA-256 of the server nonce
// then the agent's. The agent's own nonce keeps the server from choosing
// everything the key signs.
func CombineNonces(server, agent []byte) ([]byte, error) {
	if len(server) != NonceSize || len(agent) != NonceSize {
		return nil, fmt.Errorf("x509pop: nonces must be %d bytes", NonceSize)
	}
	h := sha256.New()
	h.Write(server)
	h.Write(agent)
	return h.Sum(nil), nil
}

// ParseAttestationData decodes a payload and parses its certificates,
// refusing more than 1+maxIntermediates before any is parsed.
func ParseAttestationData(b []byte, maxIntermediates int) ([]*x509.Certificate, error) {
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("x509pop: attestation data larger than %d bytes", MaxPayload)
	}
	var d AttestationData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("x509pop: attestation data: %w", err)
	}
	if len(d.Certificates) == 0 {
		return nil, errors.New("x509pop: attestation data has no certificate")
	}
	if len(d.Certificates)-1 > maxIntermediates {
		return nil, fmt.Errorf("x509pop: %d intermediates, at most %d allowed", len(d.Certificates)-1, maxIntermediates)
	}
	certs := make([]*x509.Certificate, len(d.Certificates))
	for i, der := range d.Certificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("x509pop: certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	return certs, nil
}

// ParseResponse decodes an agent's answer.
func ParseResponse(b []byte) (*Response, error) {
	if len(b) > MaxResponse {
		return nil, fmt.Errorf("x509pop: challenge response larger than %d bytes", MaxResponse)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("x509pop: challenge response: %w", err)
	}
	return &r, nil
}

// VerifyResponse checks that resp signs the combination of the server
// nonce with the agent's nonce under pub.
func VerifyResponse(pub crypto.PublicKey, serverNonce []byte, resp *Response) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		r := resp.RSASignature
		if r == nil || resp.ECDSASignature != nil {
			return errors.New("x509pop: expected an RSA signature response")
		}
		digest, err := CombineNonces(serverNonce, r.Nonce)
		if err != nil {
			return err
		}
		if err := rsa.VerifyPSS(k, crypto.SHA256, digest, r.Signature, nil); err != nil {
			return fmt.Errorf("x509pop: RSA signature: %w", err)
		}
	case *ecdsa.PublicKey:
		r := resp.ECDSASignature
		if r == nil || resp.RSASignature != nil {
			return errors.New("x509pop: expected an ECDSA signature response")
		}
		digest, err := CombineNonces(serverNonce, r.Nonce)
		if err != nil {
			return err
		}
		if !ecdsa.Verify(k, digest, new(big.Int).SetBytes(r.R), new(big.Int).SetBytes(r.S)) {
			return errors.New("x509pop: ECDSA signature does not verify")
		}
	default:
		return fmt.Errorf("x509pop: unsupported key type %T", pub)
	}
	return nil
}

// PluginData is the plugin_data block of NodeAttestor "x509pop".
type PluginData struct {
	CABundlePath      string   `hcl:"ca_bundle_path"`
	CABundlePaths     []string `hcl:"ca_bundle_paths"`
	AgentPathTemplate string   `hcl:"agent_path_template"`
	// MaxIntermediates defaults to DefaultMaxIntermediates.
	MaxIntermediates *int `hcl:"max_intermediates"`
}

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Roots       *x509.CertPool
	// MaxIntermediates is how many intermediates a chain may have.
	MaxIntermediates int
	// AgentPathTemplate is DefaultAgentPathTemplate when nil.
	AgentPathTemplate *template.Template
	Now               func() time.Time
}

// Attestor verifies x509pop attestation.
type Attestor struct {
	cfg Config
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("x509pop: trust domain is required")
	}
	if cfg.Roots == nil {
		return nil, errors.New("x509pop: a CA bundle is required")
	}
	if cfg.MaxIntermediates < 0 {
		return nil, errors.New("x509pop: max_intermediates must not be negative")
	}
	if cfg.AgentPathTemplate == nil {
		t, err := ParseAgentPathTemplate(DefaultAgentPathTemplate)
		if err != nil {
			return nil, err
		}
		cfg.AgentPathTemplate = t
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Attestor{cfg: cfg}, nil
}

// NewFromPluginData builds an Attestor from its plugin_data.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData) (*Attestor, error) {
	paths := d.CABundlePaths
	if d.CABundlePath != "" {
		paths = append([]string{d.CABundlePath}, paths...)
	}
	if len(paths) == 0 {
		return nil, errors.New("x509pop: ca_bundle_path or ca_bundle_paths is required")
	}
	roots := x509.NewCertPool()
	for _, p := range paths {
		certs, err := LoadCertificates(p)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	cfg := Config{TrustDomain: td, Roots: roots, MaxIntermediates: DefaultMaxIntermediates}
	if d.MaxIntermediates != nil {
		cfg.MaxIntermediates = *d.MaxIntermediates
	}
	if d.AgentPathTemplate != "" {
		t, err := ParseAgentPathTemplate(d.AgentPathTemplate)
		if err != nil {
			return nil, err
		}
		cfg.AgentPathTemplate = t
	}
	return New(cfg)
}

// LoadCertificates reads the PEM certificates of a file; it must hold at
// least one.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("x509pop: %w", err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("x509pop: %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("x509pop: %s holds no PEM certificate", path)
	}
	return out, nil
}

// Type implements nodeattestor.Attestor.
func (*Attestor) Type() string { return PluginName }

// Fingerprint is the hex SHA-1 of a certificate's DER, SPIRE's agent name.
func Fingerprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec // a name, not a security boundary: the chain and signature are.
	return hex.EncodeToString(sum[:])
}

// SerialNumberHex is the serial number as lowercase hex of even length.
func SerialNumberHex(n *big.Int) string {
	s := n.Text(16)
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// PathTemplateData is what agent_path_template can reference, besides
// every field of the leaf certificate (.Subject.CommonName, ...).
type PathTemplateData struct {
	*x509.Certificate
	PluginName      string
	Fingerprint     string
	TrustDomain     string
	SerialNumberHex string
	// SAN holds the x509pop://<td>/<key>/<value> URI SANs by key.
	SAN map[string]string
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "x509pop: "+format, args...)
}

// Attest implements nodeattestor.Attestor.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, challenge nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	certs, err := ParseAttestationData(payload, a.cfg.MaxIntermediates)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	leaf := certs[0]
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, deny("the certificate lacks the digitalSignature key usage")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         a.cfg.Roots,
		Intermediates: inter,
		CurrentTime:   a.cfg.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, deny("certificate chain: %v", err)
	}
	var usable [][]*x509.Certificate
	for _, ch := range chains {
		// A chain is leaf, intermediates..., root.
		if len(ch)-2 <= a.cfg.MaxIntermediates {
			usable = append(usable, ch)
		}
	}
	if len(usable) == 0 {
		return nil, deny("every chain to a trusted root has more than %d intermediates", a.cfg.MaxIntermediates)
	}

	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, status.Errorf(codes.Internal, "x509pop: nonce: %v", err)
	}
	var ch Challenge
	switch leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		ch.RSASignature = &NonceChallenge{Nonce: nonce}
	case *ecdsa.PublicKey:
		ch.ECDSASignature = &NonceChallenge{Nonce: nonce}
	default:
		return nil, deny("unsupported key type %T", leaf.PublicKey)
	}
	chBytes, err := json.Marshal(ch)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "x509pop: challenge: %v", err)
	}
	raw, err := challenge(ctx, chBytes)
	if err != nil {
		return nil, err
	}
	resp, err := ParseResponse(raw)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := VerifyResponse(leaf.PublicKey, nonce, resp); err != nil {
		return nil, deny("proof of possession: %v", err)
	}

	san := sanSelectors(leaf, a.cfg.TrustDomain)
	id, err := agentIDFromTemplate(a.cfg.TrustDomain, a.cfg.AgentPathTemplate, PathTemplateData{
		Certificate:     leaf,
		PluginName:      PluginName,
		Fingerprint:     Fingerprint(leaf),
		TrustDomain:     a.cfg.TrustDomain.Name(),
		SerialNumberHex: SerialNumberHex(leaf.SerialNumber),
		SAN:             san,
	})
	if err != nil {
		return nil, deny("%v", err)
	}
	return &nodeattestor.Result{AgentID: id, Selectors: selectors(leaf, usable, san), CanReattest: true}, nil
}

// sanSelectors reads URI SANs of the form x509pop://<td>/<key>/<value>;
// x509pop://<td>/<key>:<value>, the form SPIRE's docs show, is accepted
// too.
func sanSelectors(leaf *x509.Certificate, td spiffeid.TrustDomain) map[string]string {
	out := map[string]string{}
	for _, u := range leaf.URIs {
		if u.Scheme != PluginName || u.Host != td.Name() {
			continue
		}
		p := strings.Trim(u.Path, "/")
		k, v, ok := strings.Cut(p, "/")
		if !ok {
			k, v, ok = strings.Cut(p, ":")
		}
		if ok && k != "" {
			if uv, err := url.PathUnescape(v); err == nil {
				out[k] = uv
			}
		}
	}
	return out
}

func selectors(leaf *x509.Certificate, chains [][]*x509.Certificate, san map[string]string) []*types.Selector {
	var values []string
	if cn := leaf.Subject.CommonName; cn != "" {
		values = append(values, "subject:cn:"+cn)
	}
	seen := map[string]bool{}
	for _, ch := range chains {
		for _, c := range ch[1:] {
			fp := Fingerprint(c)
			if !seen[fp] {
				seen[fp] = true
				values = append(values, "ca:fingerprint:"+fp)
			}
		}
	}
	values = append(values, "serialnumber:"+SerialNumberHex(leaf.SerialNumber))
	keys := make([]string, 0, len(san))
	for k := range san {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		values = append(values, "san:"+k+":"+san[k])
	}
	out := make([]*types.Selector, len(values))
	for i, v := range values {
		out[i] = &types.Selector{Type: PluginName, Value: v}
	}
	return out
}
