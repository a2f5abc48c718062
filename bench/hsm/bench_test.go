package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/hsm"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream/pkcs11"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	kmpkcs11 "github.com/spiffe-hw/spire-hw/server/keymanager/pkcs11"
	"github.com/spiffe-hw/spire-hw/sim/softhsm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	softhsm.Cleanup()
	os.Exit(code)
}

var td = spiffeid.RequireTrustDomainFromString("example.org")

// op is one issuance; it must be safe for concurrent use.
type op func() error

type mode struct {
	name string
	kind string // "x509" or "jwt"
	op   op
}

// verifiedKM hides the memory key manager's InProcess marks, so the CA
// verifies every signature as it does for HSM keys: the row shows what that
// check costs.
type verifiedKM struct{ keymanager.KeyManager }

type verifiedKey struct{ k keymanager.Key }

func (k verifiedKey) Public() crypto.PublicKey { return k.k.Public() }
func (k verifiedKey) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return k.k.Sign(r, d, o)
}
func (k verifiedKey) ID() string               { return k.k.ID() }
func (k verifiedKey) Type() keymanager.KeyType { return k.k.Type() }

func (m verifiedKM) GenerateKey(ctx context.Context, id string, t keymanager.KeyType) (keymanager.Key, error) {
	k, err := m.KeyManager.GenerateKey(ctx, id, t)
	if err != nil {
		return nil, err
	}
	return verifiedKey{k}, nil
}

func newCA(tb testing.TB, km keymanager.KeyManager, up *pkcs11.Authority) *ca.Manager {
	st, err := sqlstore.Open(context.Background(), sqlstore.Config{DatabaseType: "sqlite3", ConnectionString: filepath.Join(tb.TempDir(), "ds.sqlite3")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	cfg := ca.Config{TrustDomain: td, KeyManager: km, Store: st}
	if up != nil {
		cfg.Upstream = up
	}
	m, err := ca.New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// checkCSR is what the server does with an agent's CSR before signing.
func checkCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	return csr, csr.CheckSignature()
}

func modes(tb testing.TB) []mode {
	ctx := context.Background()
	workloadKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromPath(td, "/workload")
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: nil}, workloadKey)
	if err != nil {
		tb.Fatal(err)
	}

	// Memory-key CA as the server runs it, and the same with every
	// signature verified.
	memCA := newCA(tb, memory.New(), nil)
	verifiedCA := newCA(tb, verifiedKM{memory.New()}, nil)

	// SoftHSM: raw key, HSM root + memory intermediate, every SVID in HSM.
	tok := softhsm.NewToken(tb)
	hcfg := hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: hsm.PIN(tok.PIN), MaxSessions: 8, HealthInterval: -1}
	rawCfg := hcfg
	rawCfg.KeyLabelPrefix = "raw-"
	rawTok, err := hsm.Open(rawCfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rawTok.Close() })
	rawHSMKey, err := rawTok.GenerateKey(ctx, "k", hsm.ECP256)
	if err != nil {
		tb.Fatal(err)
	}
	upCfg := hcfg
	upCfg.KeyLabelPrefix = "up-"
	up, err := pkcs11.New(pkcs11.Config{HSM: upCfg, CreateRoot: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = up.Close() })
	hsmRootCA := newCA(tb, memory.New(), up)
	kmCfg := hcfg
	kmCfg.KeyLabelPrefix = "km-"
	km, err := kmpkcs11.New(kmCfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = km.Close() })
	hsmCA := newCA(tb, km, nil)

	goKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	goCA := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	goCADER, _ := x509.CreateCertificate(rand.Reader, goCA, goCA, goKey.Public(), goKey)
	goCA, _ = x509.ParseCertificate(goCADER)
	tbs := make([]byte, 400) // about an SVID's TBSCertificate

	x509Via := func(m *ca.Manager) op {
		return func() error {
			csr, err := checkCSR(csrDER)
			if err != nil {
				return err
			}
			// IssueX509SVID is what the server's API calls.
			_, err = m.IssueX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: id, PublicKey: csr.PublicKey})
			return err
		}
	}
	jwtVia := func(m *ca.Manager) op {
		return func() error {
			_, err := m.SignJWTSVID(ctx, ca.JWTSVIDParams{SPIFFEID: id, Audience: []string{"bench"}})
			return err
		}
	}
	// signWith is one raw signature over an SVID-sized message, with the
	// CSR check and the check of the signature when asked: with both, it is
	// the work every-SVID-in-HSM mode cannot skip (the HSM floor).
	signWith := func(s crypto.Signer, withCSR, verify bool) op {
		pub := s.Public().(*ecdsa.PublicKey)
		return func() error {
			if withCSR {
				if _, err := checkCSR(csrDER); err != nil {
					return err
				}
			}
			d := sha256.Sum256(tbs)
			sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
			if err != nil {
				return err
			}
			if verify && !ecdsa.VerifyASN1(pub, d[:], sig) {
				return errors.New("signature does not verify")
			}
			return nil
		}
	}
	var serial atomic.Int64
	return []mode{
		{"raw ECDSA P-256 sign + CSR check (limit)", "x509", signWith(goKey, true, false)},
		{"x509.CreateCertificate + CSR check (baseline)", "x509", func() error {
			csr, err := checkCSR(csrDER)
			if err != nil {
				return err
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id.URL()}}
			_, err = x509.CreateCertificate(rand.Reader, tmpl, goCA, csr.PublicKey, goKey)
			return err
		}},
		{"CA, memory key", "x509", x509Via(memCA)},
		{"CA, memory key, signatures verified", "x509", x509Via(verifiedCA)},
		{"CA, HSM root + memory intermediate", "x509", x509Via(hsmRootCA)},
		{"raw SoftHSM sign (HSM limit)", "x509", signWith(rawHSMKey, false, false)},
		{"HSM floor: SoftHSM sign + CSR check + signature check", "x509", signWith(rawHSMKey, true, true)},
		{"CA, every SVID in SoftHSM", "x509", x509Via(hsmCA)},
		{"raw ECDSA P-256 sign (limit)", "jwt", signWith(goKey, false, false)},
		{"CA, memory key", "jwt", jwtVia(memCA)},
		{"CA, memory key, signatures verified", "jwt", jwtVia(verifiedCA)},
		{"CA, HSM root + memory intermediate", "jwt", jwtVia(hsmRootCA)},
		{"raw SoftHSM sign (HSM limit)", "jwt", signWith(rawHSMKey, false, false)},
		{"HSM floor: SoftHSM sign + signature check", "jwt", signWith(rawHSMKey, false, true)},
		{"CA, every SVID in SoftHSM", "jwt", jwtVia(hsmCA)},
	}
}
