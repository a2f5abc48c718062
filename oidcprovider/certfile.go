package oidcprovider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certFile serves the certificate and key of serving_cert_file, reloading
// them when either file's modification time changes, so that a renewed
// certificate is used without a restart.
type certFile struct {
	log               *slog.Logger
	certPath, keyPath string
	interval          time.Duration
	certMod, keyMod   time.Time
	mu                sync.RWMutex
	cert              *tls.Certificate
}

func newCertFile(log *slog.Logger, c *ServingCertFile) (*certFile, error) {
	f := &certFile{log: log, certPath: c.CertFilePath, keyPath: c.KeyFilePath, interval: c.FileSyncInterval}
	certMod, keyMod, err := f.modTimes()
	if err != nil {
		return nil, fmt.Errorf("failed to load certificate: %w", err)
	}
	if err := f.load(); err != nil {
		return nil, fmt.Errorf("failed to load certificate: %w", err)
	}
	f.certMod, f.keyMod = certMod, keyMod
	return f, nil
}

// tlsConfig is the server side of TLS with the current certificate.
func (f *certFile) tlsConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			f.mu.RLock()
			defer f.mu.RUnlock()
			return f.cert, nil
		},
		NextProtos: []string{"h2", "http/1.1"},
		MinVersion: tls.VersionTLS12,
	}
}

// watch checks the files every interval until ctx ends.
func (f *certFile) watch(ctx context.Context) {
	f.log.Info("Started watching certificate files", "interval", f.interval)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			f.log.Info("Stopping file watcher")
			return
		case <-t.C:
			f.sync()
		}
	}
}

func (f *certFile) sync() {
	certMod, keyMod, err := f.modTimes()
	if err != nil {
		f.log.Error("Failed to stat certificate files", "error", err)
		return
	}
	if certMod.Equal(f.certMod) && keyMod.Equal(f.keyMod) {
		return
	}
	f.log.Info("File change detected, reloading certificate and key...")
	if err := f.load(); err != nil {
		// The previous certificate stays in use: a half-written pair must
		// not take the service down.
		f.log.Error("Failed to load certificate", "error", err)
		return
	}
	f.certMod, f.keyMod = certMod, keyMod
	f.log.Info("Loaded provided certificate with success")
}

func (f *certFile) modTimes() (cert, key time.Time, err error) {
	ci, err := os.Stat(f.certPath)
	if err != nil {
		return cert, key, err
	}
	ki, err := os.Stat(f.keyPath)
	if err != nil {
		return cert, key, err
	}
	return ci.ModTime(), ki.ModTime(), nil
}

func (f *certFile) load() error {
	c, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		return err
	}
	if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
		return err
	}
	f.mu.Lock()
	f.cert = &c
	f.mu.Unlock()
	return nil
}
