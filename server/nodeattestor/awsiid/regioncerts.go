package awsiid

import (
	"crypto/x509"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// regionCerts holds AWS's published RSA-2048 instance-identity
// certificates, one PEM file per region, as listed in the EC2 user guide
// ("Verify the instance identity document for an instance").
//
//go:embed regioncerts/*.pem
var regionCerts embed.FS

// BuiltinRegionCertificates returns AWS's public RSA-2048 certificates,
// keyed by region.
func BuiltinRegionCertificates() (map[string]*x509.Certificate, error) {
	entries, err := regionCerts.ReadDir("regioncerts")
	if err != nil {
		return nil, fmt.Errorf("awsiid: builtin certificates: %w", err)
	}
	out := make(map[string]*x509.Certificate, len(entries))
	for _, e := range entries {
		b, err := regionCerts.ReadFile("regioncerts/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("awsiid: builtin certificates: %w", err)
		}
		c, err := parseCertPEM(b)
		if err != nil {
			return nil, fmt.Errorf("awsiid: builtin certificate %s: %w", e.Name(), err)
		}
		out[strings.TrimSuffix(e.Name(), ".pem")] = c
	}
	return out, nil
}

// LoadCertificate reads one PEM certificate from path.
func LoadCertificate(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("awsiid: %w", err)
	}
	c, err := parseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("awsiid: %s: %w", path, err)
	}
	return c, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}
