// Package sshpop verifies SSH proof-of-possession node attestation,
// compatible with SPIRE's "sshpop" plugin: the agent presents its SSH host
// certificate; the server checks it was signed by a trusted certificate
// authority and is valid now, then has the agent sign a fresh server nonce
// combined with a nonce of its own with the host key.
//
// Agents are named spiffe://<td>/spire/agent/sshpop/<fingerprint>, the
// fingerprint being the unpadded URL-safe base64 SHA-256 of the
// certificate, or as agent_path_template says. As in SPIRE, no selectors
// are produced.
package sshpop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PluginName is the attestation type and the plugin name in configs.
const PluginName = "sshpop"

// Wire-format bounds and the nonce size.
const (
	MaxPayload  = 16 << 10
	MaxResponse = 4 << 10
	NonceSize   = 32
)

// AttestationData is the agent's payload: the host certificate in SSH
// wire format. The JSON keys are SPIRE's (Go's default field names).
type AttestationData struct {
	Certificate []byte
}

// Challenge carries the server nonce.
type Challenge struct {
	Nonce []byte
}

// Response is the agent's nonce and its host-key signature over
// CombineNonces.
type Response struct {
	Nonce     []byte
	Signature *ssh.Signature
}

// CombineNonces is the data the agent signs: SHA-256 of the server nonce
// then the agent's.
func CombineNonces(server, agent []byte) ([]byte, error) {
	if len(server) != NonceSize || len(agent) != NonceSize {
		return nil, fmt.Errorf("sshpop: nonces must be %d bytes", NonceSize)
	}
	h := sha256.New()
	h.Write(server)
	h.Write(agent)
	return h.Sum(nil), nil
}

// Fingerprint names a certificate: unpadded URL-safe base64 of the
// SHA-256 of its wire form.
func Fingerprint(c *ssh.Certificate) string {
	sum := sha256.Sum256(c.Marshal())
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ParseAttestationData decodes a payload into a host certificate with at
// least one principal.
func ParseAttestationData(b []byte) (*ssh.Certificate, error) {
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("sshpop: attestation data larger than %d bytes", MaxPayload)
	}
	var d AttestationData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("sshpop: attestation data: %w", err)
	}
	if len(d.Certificate) == 0 {
		return nil, errors.New("sshpop: attestation data has no certificate")
	}
	pub, err := ssh.ParsePublicKey(d.Certificate)
	if err != nil {
		return nil, fmt.Errorf("sshpop: certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("sshpop: the key is not a certificate")
	}
	if len(cert.ValidPrincipals) == 0 {
		return nil, errors.New("sshpop: the certificate has no valid principals")
	}
	return cert, nil
}

// ParseResponse decodes an agent's answer.
func ParseResponse(b []byte) (*Response, error) {
	if len(b) > MaxResponse {
		return nil, fmt.Errorf("sshpop: challenge response larger than %d bytes", MaxResponse)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("sshpop: challenge response: %w", err)
	}
	if r.Signature == nil {
		return nil, errors.New("sshpop: challenge response has no signature")
	}
	return &r, nil
}

// PluginData is the plugin_data block of NodeAttestor "sshpop".
type PluginData struct {
	CertAuthorities     []string `hcl:"cert_authorities"`
	CertAuthoritiesPath string   `hcl:"cert_authorities_path"`
	CanonicalDomain     string   `hcl:"canonical_domain"`
	AgentPathTemplate   string   `hcl:"agent_path_template"`
}

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// Authorities are the trusted host certificate authorities.
	Authorities []ssh.PublicKey
	// CanonicalDomain, when set, is a suffix the first principal must
	// carry; the hostname is the principal without it.
	CanonicalDomain   string
	AgentPathTemplate *template.Template
	Now               func() time.Time
}

// Attestor verifies sshpop attestation.
type Attestor struct {
	cfg         Config
	authorities map[string]bool
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("sshpop: trust domain is required")
	}
	if len(cfg.Authorities) == 0 {
		return nil, errors.New("sshpop: cert_authorities or cert_authorities_path is required")
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
	a := &Attestor{cfg: cfg, authorities: map[string]bool{}}
	for _, k := range cfg.Authorities {
		if _, isCert := k.(*ssh.Certificate); isCert {
			return nil, errors.New("sshpop: a certificate authority must be a plain key, not a certificate")
		}
		a.authorities[string(k.Marshal())] = true
	}
	return a, nil
}

// NewFromPluginData builds an Attestor from its plugin_data; the
// authorities are the union of both settings.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData) (*Attestor, error) {
	lines := d.CertAuthorities
	if d.CertAuthoritiesPath != "" {
		b, err := os.ReadFile(d.CertAuthoritiesPath)
		if err != nil {
			return nil, fmt.Errorf("sshpop: cert_authorities_path: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
	}
	cfg := Config{TrustDomain: td, CanonicalDomain: d.CanonicalDomain}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l))
		if err != nil {
			return nil, fmt.Errorf("sshpop: certificate authority %q: %w", l, err)
		}
		cfg.Authorities = append(cfg.Authorities, k)
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

// Type implements nodeattestor.Attestor.
func (*Attestor) Type() string { return PluginName }

// PathTemplateData is what agent_path_template can reference, besides
// every field of the certificate (.ValidPrincipals, .KeyId, ...).
type PathTemplateData struct {
	*ssh.Certificate
	PluginName  string
	Fingerprint string
	Hostname    string
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "sshpop: "+format, args...)
}

// Attest implements nodeattestor.Attestor.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, challenge nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	cert, err := ParseAttestationData(payload)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	principal := cert.ValidPrincipals[0]
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool { return a.authorities[string(auth.Marshal())] },
		Clock:           a.cfg.Now,
	}
	// CheckHostKey checks the certificate type, authority, principal,
	// validity window and the authority's signature.
	if err := checker.CheckHostKey(net.JoinHostPort(principal, "22"), &net.IPAddr{}, cert); err != nil {
		return nil, deny("host certificate: %v", err)
	}
	hostname := principal
	if d := a.cfg.CanonicalDomain; d != "" {
		h, ok := strings.CutSuffix(principal, "."+d)
		if !ok || h == "" {
			return nil, deny("principal %q is not in domain %q", principal, d)
		}
		hostname = h
	}

	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, status.Errorf(codes.Internal, "sshpop: nonce: %v", err)
	}
	chBytes, err := json.Marshal(Challenge{Nonce: nonce})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sshpop: challenge: %v", err)
	}
	raw, err := challenge(ctx, chBytes)
	if err != nil {
		return nil, err
	}
	resp, err := ParseResponse(raw)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	signed, err := CombineNonces(nonce, resp.Nonce)
	if err != nil {
		return nil, deny("%v", err)
	}
	// The certificate's Verify checks with the certified host key.
	if err := cert.Verify(signed, resp.Signature); err != nil {
		return nil, deny("proof of possession: %v", err)
	}
	id, err := agentIDFromTemplate(a.cfg.TrustDomain, a.cfg.AgentPathTemplate, PathTemplateData{
		Certificate: cert,
		PluginName:  PluginName,
		Fingerprint: Fingerprint(cert),
		Hostname:    hostname,
	})
	if err != nil {
		return nil, deny("%v", err)
	}
	return &nodeattestor.Result{AgentID: id, CanReattest: true}, nil
}
