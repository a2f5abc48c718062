package federation

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertFile serves https_web's serving_cert_file: a PEM certificate chain
// and key on disk, reloaded every sync interval when either file changed,
// as SPIRE's disk certificate manager does. A reload that fails keeps the
// certificate already loaded.
type CertFile struct {
	certPath, keyPath string
	interval          time.Duration
	log               *slog.Logger

	mu              sync.RWMutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
}

// DefaultFileSyncInterval is SPIRE's file_sync_interval default.
const DefaultFileSyncInterval = time.Hour

// NewCertFile loads the certificate and key; a failure is an error, since
// the endpoint could not serve.
func NewCertFile(certPath, keyPath string, interval time.Duration, log *slog.Logger) (*CertFile, error) {
	if interval <= 0 {
		interval = DefaultFileSyncInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CertFile{certPath: certPath, keyPath: keyPath, interval: interval, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate returns the loaded certificate; it is the endpoint's
// tls.Config.GetCertificate.
func (c *CertFile) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}

func (c *CertFile) load() error {
	certInfo, err := os.Stat(c.certPath)
	if err != nil {
		return fmt.Errorf("federation: serving_cert_file: %w", err)
	}
	keyInfo, err := os.Stat(c.keyPath)
	if err != nil {
		return fmt.Errorf("federation: serving_cert_file: %w", err)
	}
	c.mu.RLock()
	same := c.cert != nil && certInfo.ModTime().Equal(c.certMod) && keyInfo.ModTime().Equal(c.keyMod)
	c.mu.RUnlock()
	if same {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		return fmt.Errorf("federation: serving_cert_file: load %s and %s: %w", c.certPath, c.keyPath, err)
	}
	c.mu.Lock()
	c.cert, c.certMod, c.keyMod = &cert, certInfo.ModTime(), keyInfo.ModTime()
	c.mu.Unlock()
	c.log.Info("Loaded bundle endpoint serving certificate", "cert_file_path", c.certPath, "expires_at", cert.Leaf.NotAfter)
	return nil
}

// Run reloads the files every interval until ctx ends.
func (c *CertFile) Run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.load(); err != nil {
				c.log.Error("Failed to reload bundle endpoint serving certificate; keeping the loaded one", "error", err)
			}
		}
	}
}
