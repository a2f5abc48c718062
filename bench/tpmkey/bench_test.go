package tpmkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// signer is one key under test, by the name the reports use.
type signer struct {
	name string
	key  crypto.Signer
}

// newSigners returns the baseline (an ECDSA P-256 key in memory, what
// KeyManager "memory" holds) and a resident key on a fresh swtpm reached
// at path (the swtpm's own, or a tracer's in front of it); path "" starts
// the swtpm. It also returns the resident key's connection.
func newSigners(tb testing.TB, path string) ([]signer, *tpm.TPM) {
	tb.Helper()
	if path == "" {
		path = swtpm.StartT(tb, 1).TPMs[0].Path
	}
	mem, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tp, err := tpm.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tp.Close() })
	rk, err := tp.CreateResidentKey()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rk.Close)
	return []signer{{"memory", mem}, {"tpm", rk}}, tp
}

// agentCSRTemplate is the agent's own CSR as agent/manager makes it: the
// server assigns the ID, so it carries none.
var agentCSRTemplate = &x509.CertificateRequest{Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}}}

// signCSR is what the agent does at attestation and at every re-attestation
// with its key.
func signCSR(key crypto.Signer) error {
	_, err := x509.CreateCertificateRequest(rand.Reader, agentCSRTemplate, key)
	return err
}

// signDigest is one bare signature of a SHA-256 digest, the unit of both
// a CSR and a TLS 1.3 CertificateVerify.
func signDigest(key crypto.Signer) error {
	d := sha256.Sum256([]byte("handshake transcript"))
	_, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
	return err
}

// tlsEnv is a TLS 1.3 server on loopback that requires a client
// certificate from its CA, and the client certificates of the keys under
// test, as the agent's SVID is to the server.
type tlsEnv struct {
	addr    string
	clients map[string]*tls.Config
}

// newTLSEnv starts the server (keys in memory, as the server's own TLS
// key is) and issues one client certificate per signer.
func newTLSEnv(tb testing.TB, signers []signer) *tlsEnv {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	issue := func(serial int64, pub crypto.PublicKey, server bool) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature}
		if server {
			tmpl.DNSNames = []string{"server"}
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		} else {
			u, _ := url.Parse("spiffe://example.org/spire/agent/tpm/bench")
			tmpl.URIs = []*url.URL{u}
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return der
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvCfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{{Certificate: [][]byte{issue(2, srvKey.Public(), true)}, PrivateKey: srvKey}},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              pool,
		SessionTicketsDisabled: true, // every handshake is a full one, with the client's signature
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := tls.Server(c, srvCfg)
				_ = s.SetDeadline(time.Now().Add(30 * time.Second))
				if s.Handshake() == nil {
					// The byte tells the client that the server has
					// verified its certificate and signature.
					_, _ = s.Write([]byte{1})
				}
			}()
		}
	}()
	e := &tlsEnv{addr: l.Addr().String(), clients: map[string]*tls.Config{}}
	for i, s := range signers {
		e.clients[s.name] = &tls.Config{
			MinVersion:   tls.VersionTLS13,
			ServerName:   "server",
			RootCAs:      pool,
			Certificates: []tls.Certificate{{Certificate: [][]byte{issue(int64(10+i), s.key.Public(), false)}, PrivateKey: s.key}},
		}
	}
	return e
}

// handshake connects with cfg and returns once the server has accepted
// the client's certificate.
func (e *tlsEnv) handshake(cfg *tls.Config) error {
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(tc, b); err != nil {
		return errors.Join(errors.New("server refused the client certificate"), err)
	}
	return nil
}

// BenchmarkSign is one signature of a SHA-256 digest.
func BenchmarkSign(b *testing.B) {
	signers, _ := newSigners(b, "")
	for _, s := range signers {
		b.Run("key="+s.name, func(b *testing.B) {
			for b.Loop() {
				if err := signDigest(s.key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCSR is the agent's CSR for its SVID, signed by the key.
func BenchmarkCSR(b *testing.B) {
	signers, _ := newSigners(b, "")
	for _, s := range signers {
		b.Run("key="+s.name, func(b *testing.B) {
			for b.Loop() {
				if err := signCSR(s.key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshake is a TLS 1.3 mutual handshake over loopback whose
// client certificate key is the key under test.
func BenchmarkHandshake(b *testing.B) {
	signers, _ := newSigners(b, "")
	env := newTLSEnv(b, signers)
	for _, s := range signers {
		b.Run("key="+s.name, func(b *testing.B) {
			for b.Loop() {
				if err := env.handshake(env.clients[s.name]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
