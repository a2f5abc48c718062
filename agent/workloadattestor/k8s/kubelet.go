package k8s

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// requestTimeout bounds one /pods request, as SPIRE's 10 s does.
const requestTimeout = 10 * time.Second

// maxSecretBytes bounds the CA, token, certificate and key files read.
const maxSecretBytes = 1 << 20

// kubeletClient is one loaded set of kubelet credentials. It is replaced
// as a whole on reload, so a request uses one consistent set.
type kubeletClient struct {
	url   string
	token string
	http  *http.Client
	// material is what the client was built from; a reload that reads the
	// same bytes keeps the client and its warm connections.
	material string
}

// newKubeletClient reads the files cfg names and builds a client, as
// SPIRE's reloadKubeletClient does: the read-only port is plain HTTP to
// 127.0.0.1; the secure port verifies the kubelet against kubelet_ca_path
// (the name only when node_name is set, since the kubelet's certificate is
// for the node name, not 127.0.0.1) unless skip_kubelet_verification, and
// authenticates with nothing (use_anonymous_authentication), a client
// certificate, or the bearer token.
func newKubeletClient(cfg *Config) (*kubeletClient, error) {
	if !cfg.secure() {
		return &kubeletClient{
			url:  "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.KubeletReadOnlyPort)) + "/pods",
			http: &http.Client{Transport: newTransport(nil)},
		}, nil
	}
	var material strings.Builder
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.SkipKubeletVerification {
		tlsCfg.InsecureSkipVerify = true //nolint:gosec // the operator asked for it (skip_kubelet_verification)
	} else {
		caPath := cfg.KubeletCAPath
		if caPath == "" {
			caPath = DefaultKubeletCAPath
		}
		caPEM, err := readSecret(caPath)
		if err != nil {
			return nil, &ConfigError{Key: "kubelet_ca_path", Err: fmt.Errorf("unable to load kubelet CA: %w", err)}
		}
		roots, err := parseCAs(caPEM)
		if err != nil {
			return nil, &ConfigError{Key: "kubelet_ca_path", Err: fmt.Errorf("unable to parse kubelet CA %s: %w", caPath, err)}
		}
		material.Write(caPEM)
		if cfg.NodeName == "" {
			// Chain only: the certificate names the node, and we dial
			// 127.0.0.1.
			tlsCfg.InsecureSkipVerify = true //nolint:gosec // the chain is verified below
			tlsCfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
				return verifyChain(raw, roots)
			}
		} else {
			tlsCfg.RootCAs = roots
		}
	}
	var token string
	switch {
	case cfg.UseAnonymousAuthentication:
	case cfg.CertificatePath != "" && cfg.PrivateKeyPath != "":
		certPEM, err := readSecret(cfg.CertificatePath)
		if err != nil {
			return nil, &ConfigError{Key: "certificate_path", Err: fmt.Errorf("unable to load certificate: %w", err)}
		}
		keyPEM, err := readSecret(cfg.PrivateKeyPath)
		if err != nil {
			return nil, &ConfigError{Key: "private_key_path", Err: fmt.Errorf("unable to load private key: %w", err)}
		}
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, &ConfigError{Key: "certificate_path", Err: fmt.Errorf("unable to load keypair: %w", err)}
		}
		tlsCfg.Certificates = []tls.Certificate{kp}
		material.Write(certPEM)
		material.Write(keyPEM)
	case cfg.CertificatePath != "":
		return nil, &ConfigError{Key: "private_key_path", Err: errors.New("the private key path is required with the certificate path")}
	case cfg.PrivateKeyPath != "":
		return nil, &ConfigError{Key: "certificate_path", Err: errors.New("the certificate path is required with the private key path")}
	default:
		path := cfg.TokenPath
		if path == "" {
			path = DefaultTokenPath
		}
		b, err := readSecret(path)
		if err != nil {
			return nil, &ConfigError{Key: "token_path", Err: fmt.Errorf("unable to load token: %w", err)}
		}
		token = strings.TrimSpace(string(b))
		material.WriteString(token)
	}
	host := cfg.NodeName
	if host == "" {
		host = "127.0.0.1"
	}
	return &kubeletClient{
		url:      "https://" + net.JoinHostPort(host, strconv.Itoa(cfg.KubeletSecurePort)) + "/pods",
		token:    token,
		http:     &http.Client{Transport: newTransport(tlsCfg)},
		material: material.String(),
	}, nil
}

func newTransport(tlsCfg *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:       tlsCfg,
		DialContext:           (&net.Dialer{Timeout: requestTimeout}).DialContext,
		TLSHandshakeTimeout:   requestTimeout,
		ResponseHeaderTimeout: requestTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		// The kubelet is local: a proxy from the environment would only
		// leak the token.
		Proxy: nil,
	}
}

func (c *kubeletClient) close() { c.http.CloseIdleConnections() }

// getPods fetches the pod list. ctx bounds it, and so does requestTimeout.
func (c *kubeletClient) getPods(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("unable to create request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unable to perform request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("unexpected status code on pods response: %d %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPodListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("unable to read pods response: %w", err)
	}
	if len(b) > maxPodListBytes {
		return nil, fmt.Errorf("pods response larger than %d bytes", maxPodListBytes)
	}
	return b, nil
}

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxSecretBytes)
	}
	return b, nil
}

// parseCAs reads every CERTIFICATE block; anything else in the file, or no
// certificate at all, is an error, as SPIRE's pemutil has it.
func parseCAs(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificates found")
	}
	return pool, nil
}

// verifyChain checks the kubelet's chain against roots without a host name.
func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("no certs presented by kubelet")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}
