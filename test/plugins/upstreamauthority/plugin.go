package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// defaultTTL is the minted CA's lifetime when the host prefers none.
	defaultTTL = time.Hour
	// generatedRootTTL is the lifetime of the root made at Configure.
	generatedRootTTL = 30 * 24 * time.Hour
	// backdate covers clock skew between the plugin and whoever checks the CA.
	backdate = time.Minute
)

// config is the plugin's HCL configuration.
type config struct {
	CertFilePath string `hcl:"cert_file_path"`
	KeyFilePath  string `hcl:"key_file_path"`
}

// authority is the root that signs, as Configure left it.
type authority struct {
	cert   *x509.Certificate
	key    crypto.Signer
	faults fault.Faults
}

// Plugin is the upstream authority. Use New.
type Plugin struct {
	upstreamauthorityv1.UnimplementedUpstreamAuthorityServer
	configv1.UnimplementedConfigServer

	log hclog.Logger
	now func() time.Time

	mu sync.RWMutex
	ca *authority
}

// New returns an unconfigured plugin.
func New() *Plugin {
	return &Plugin{log: hclog.NewNullLogger(), now: time.Now}
}

// SetLogger implements pluginsdk.NeedsLogger.
func (p *Plugin) SetLogger(log hclog.Logger) {
	p.log = log
}

// Configure implements the Config service.
func (p *Plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	var cfg config
	faults, err := fault.Configure(req, &cfg)
	if err != nil {
		return nil, err
	}
	var ca *authority
	switch {
	case cfg.CertFilePath == "" && cfg.KeyFilePath == "":
		ca, err = generateRoot(p.now())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "generate root: %v", err)
		}
	case cfg.CertFilePath == "" || cfg.KeyFilePath == "":
		return nil, status.Error(codes.InvalidArgument, "cert_file_path and key_file_path go together: set both or neither")
	default:
		ca, err = loadRoot(cfg.CertFilePath, cfg.KeyFilePath)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	ca.faults = faults
	p.mu.Lock()
	p.ca = ca
	p.mu.Unlock()
	p.log.Info("Configured", "root_subject", ca.cert.Subject.String(), "root_not_after", ca.cert.NotAfter.UTC().Format(time.RFC3339),
		"cert_file_path", cfg.CertFilePath, "hang", faults.Hang, "crash", faults.Crash)
	return &configv1.ConfigureResponse{}, nil
}

// MintX509CAAndSubscribe implements the UpstreamAuthority service.
func (p *Plugin) MintX509CAAndSubscribe(req *upstreamauthorityv1.MintX509CARequest, stream upstreamauthorityv1.UpstreamAuthority_MintX509CAAndSubscribeServer) error {
	ca, err := p.authority()
	if err != nil {
		return err
	}
	ca.faults.Serve()

	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "parse CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return status.Errorf(codes.InvalidArgument, "CSR signature: %v", err)
	}
	ttl := defaultTTL
	if req.GetPreferredTtl() > 0 {
		ttl = time.Duration(req.GetPreferredTtl()) * time.Second
	}
	now := p.now()
	notBefore, notAfter := now.Add(-backdate), now.Add(ttl)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := serialNumber()
	if err != nil {
		return status.Errorf(codes.Internal, "serial number: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		URIs:                  csr.URIs,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return status.Errorf(codes.Internal, "sign CA: %v", err)
	}
	p.log.Debug("Minted X509 CA", "uris", fmt.Sprint(csr.URIs), "not_after", notAfter.UTC().Format(time.RFC3339))
	if err := stream.Send(&upstreamauthorityv1.MintX509CAResponse{
		X509CaChain:       []*types.X509Certificate{{Asn1: der}},
		UpstreamX509Roots: []*types.X509Certificate{{Asn1: ca.cert.Raw}},
	}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// PublishJWTKeyAndSubscribe implements the UpstreamAuthority service: the
// upstream's JWT keys are just the one it was given.
func (p *Plugin) PublishJWTKeyAndSubscribe(req *upstreamauthorityv1.PublishJWTKeyRequest, stream upstreamauthorityv1.UpstreamAuthority_PublishJWTKeyAndSubscribeServer) error {
	ca, err := p.authority()
	if err != nil {
		return err
	}
	ca.faults.Serve()

	if req.GetJwtKey() == nil {
		return status.Error(codes.InvalidArgument, "jwt_key is required")
	}
	if err := stream.Send(&upstreamauthorityv1.PublishJWTKeyResponse{UpstreamJwtKeys: []*types.JWTKey{req.GetJwtKey()}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (p *Plugin) authority() (*authority, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "not configured")
	}
	return p.ca, nil
}

func generateRoot(now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "test upstream root"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(generatedRootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

// loadRoot reads the root certificate and its key and checks that they
// belong together, so a mismatch fails at Configure and not at the first
// signature a verifier rejects.
func loadRoot(certPath, keyPath string) (*authority, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("cert_file_path: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("cert_file_path %s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cert_file_path %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("key_file_path: %w", err)
	}
	block, _ = pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("key_file_path %s: no PEM block", keyPath)
	}
	key, err := parseKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key_file_path %s: %w", keyPath, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("key_file_path %s: key does not match the certificate in %s", keyPath, certPath)
	}
	return &authority{cert: cert, key: key}, nil
}

// parseKey accepts the three encodings people keep CA keys in.
func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("PKCS#8 key of type %s cannot sign", reflect.TypeOf(k))
		}
		return s, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, SEC1 or PKCS#1 private key")
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
