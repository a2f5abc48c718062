package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// DefaultACMEDirectoryURL is SPIRE's directory_url default (Let's Encrypt).
const DefaultACMEDirectoryURL = "https://acme-v02.api.letsencrypt.org/directory"

// ACMEConfig is https_web's acme block.
type ACMEConfig struct {
	DirectoryURL string
	DomainName   string
	Email        string
	ToSAccepted  bool
	// CacheDir keeps the account key and certificates across restarts
	// (SPIRE's <data_dir>/bundle-acme).
	CacheDir string
}

// ACME obtains the endpoint's certificate from an ACME CA with the
// TLS-ALPN-01 challenge, answered on the endpoint's own listener, as
// SPIRE does. It needs what the operator's network must give it: the
// directory reachable and domain_name resolving to this endpoint on port
// 443. Without them no certificate is issued and handshakes fail; the
// server logs so at start.
type ACME struct {
	m *autocert.Manager
}

// NewACME returns the certificate source for cfg.
func NewACME(cfg ACMEConfig, log *slog.Logger) (*ACME, error) {
	if cfg.DomainName == "" {
		return nil, errors.New("federation: acme: domain_name is required")
	}
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = DefaultACMEDirectoryURL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prompt := func(tosURL string) bool {
		if !cfg.ToSAccepted {
			log.Warn("ACME Terms of Service not accepted (set tos_accepted = true to accept them)", "tos_url", tosURL)
		}
		return cfg.ToSAccepted
	}
	log.Warn("Bundle endpoint uses ACME: certificates are requested from the ACME directory with the TLS-ALPN-01 challenge, "+
		"which needs the directory reachable from this server and domain_name resolving to this endpoint on port 443; "+
		"without internet access no certificate is issued and TLS handshakes fail",
		"directory_url", cfg.DirectoryURL, "domain_name", cfg.DomainName)
	return &ACME{m: &autocert.Manager{
		Prompt:     prompt,
		Cache:      autocert.DirCache(cfg.CacheDir),
		HostPolicy: autocert.HostWhitelist(cfg.DomainName),
		Email:      cfg.Email,
		Client:     &acme.Client{DirectoryURL: cfg.DirectoryURL},
	}}, nil
}

// GetCertificate answers TLS-ALPN-01 challenges and serves the issued
// certificate.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.m.GetCertificate(hello)
}

// NextProtos is the ALPN protocol the challenge uses.
func (a *ACME) NextProtos() []string { return []string{acme.ALPNProto} }

// Run does nothing: autocert renews on demand. It is here so that every
// certificate source runs the same way.
func (a *ACME) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
