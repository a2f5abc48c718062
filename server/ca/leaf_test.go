package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 key identifier
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// errCaptured stops x509.CreateCertificate once it has handed over the
// TBSCertificate.
var errCaptured = errors.New("captured")

// tbsCapture is a crypto.MessageSigner that keeps the TBSCertificate that
// x509.CreateCertificate asks it to sign.
type tbsCapture struct {
	pub crypto.PublicKey
	tbs []byte
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errCaptured
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	c.tbs = append([]byte(nil), msg...)
	return nil, errCaptured
}

// stdlibTBS is the TBSCertificate x509.CreateCertificate writes for what
// leafTemplate t describes.
func stdlibTBS(t *leafTemplate, subject pkix.Name, pub crypto.PublicKey, parent *x509.Certificate) ([]byte, error) {
	u, err := url.Parse(t.uri)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          t.serial,
		Subject:               subject,
		URIs:                  []*url.URL{u},
		DNSNames:              t.dnsNames,
		NotBefore:             t.notBefore,
		NotAfter:              t.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          t.ski,
	}
	c := &tbsCapture{pub: parent.PublicKey}
	if _, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, c); !errors.Is(err, errCaptured) {
		if err == nil {
			err = errors.New("CreateCertificate did not ask for a signature")
		}
		return nil, err
	}
	return c.tbs, nil
}

// testCA is a CA certificate and key of a key manager key type.
func testCA(t testing.TB, kt keymanager.KeyType) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := keymanager.GenerateSigner(kt)
	if err != nil {
		t.Fatal(err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA", Organization: []string{"SPIRE"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// template fills a leafTemplate as IssueX509SVID does.
func template(t testing.TB, parent *x509.Certificate, pub crypto.PublicKey, p X509SVIDParams, serial *big.Int, nb, na time.Time) *leafTemplate {
	t.Helper()
	kt, err := keymanager.KeyTypeOf(parent.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	alg := leafSigAlgs[kt]
	subject, err := leafSubject(p)
	if err != nil {
		t.Fatal(err)
	}
	spki, ski, err := spkiKeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &leafTemplate{
		serial: serial, sigAlg: alg, issuer: parent.RawSubject, notBefore: nb, notAfter: na,
		subject: subject, spki: spki, ski: ski, aki: parent.SubjectKeyId,
		uri: p.SPIFFEID.String(), dnsNames: p.DNSNames,
	}
}

// subjectName is the pkix.Name leafSubject encodes, for the stdlib side.
func subjectName(p X509SVIDParams) pkix.Name {
	s := p.Subject
	if s.String() == "" {
		s = defaultSubject
	}
	if len(p.DNSNames) > 0 {
		s.CommonName = p.DNSNames[0]
	}
	return s
}

func TestLeafTBSMatchesCreateCertificate(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := keymanager.GenerateSigner(keymanager.RSA2048)
	now := time.Date(2026, 11, 27, 1, 2, 3, 456789, time.UTC)
	highBit, _ := new(big.Int).SetString("80000000000000000000000000000001", 16)
	cases := map[string]struct {
		p      X509SVIDParams
		pub    crypto.PublicKey
		serial *big.Int
		nb, na time.Time
	}{
		"default subject":   {p: X509SVIDParams{SPIFFEID: id}, pub: p256.Public(), serial: big.NewInt(7), nb: now, na: now.Add(time.Hour)},
		"DNS names":         {p: X509SVIDParams{SPIFFEID: id, DNSNames: []string{"web.example.org", "*.web.example.org"}}, pub: p256.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"caller subject":    {p: X509SVIDParams{SPIFFEID: id, Subject: pkix.Name{Organization: []string{"Acme"}, OrganizationalUnit: []string{"edge"}, CommonName: "w"}}, pub: p256.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"serial high bit":   {p: X509SVIDParams{SPIFFEID: id}, pub: p256.Public(), serial: highBit, nb: now, na: now.Add(time.Hour)},
		"P-384 leaf key":    {p: X509SVIDParams{SPIFFEID: id}, pub: p384.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"RSA leaf key":      {p: X509SVIDParams{SPIFFEID: id}, pub: rsaKey.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"across 2050":       {p: X509SVIDParams{SPIFFEID: id}, pub: p256.Public(), serial: big.NewInt(1), nb: time.Date(2049, 12, 31, 23, 0, 0, 0, time.UTC), na: time.Date(2050, 1, 1, 1, 0, 0, 0, time.UTC)},
		"before 1950":       {p: X509SVIDParams{SPIFFEID: id}, pub: p256.Public(), serial: big.NewInt(1), nb: time.Date(1949, 12, 31, 23, 0, 0, 0, time.UTC), na: time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)},
		"local time zone":   {p: X509SVIDParams{SPIFFEID: id}, pub: p256.Public(), serial: big.NewInt(1), nb: now.In(time.FixedZone("X", 5*3600)), na: now.Add(time.Hour).In(time.FixedZone("Y", -7*3600))},
		"long SPIFFE ID":    {p: X509SVIDParams{SPIFFEID: spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("example.org"), "/"+string(bytes.Repeat([]byte("a"), 300)))}, pub: p256.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"many DNS names":    {p: X509SVIDParams{SPIFFEID: id, DNSNames: bytesNames(40)}, pub: p256.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"subject of the CA": {p: X509SVIDParams{SPIFFEID: id, Subject: pkix.Name{CommonName: "test CA", Organization: []string{"SPIRE"}}}, pub: p256.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Hour)},
		"short SPIFFE ID":   {p: X509SVIDParams{SPIFFEID: spiffeid.RequireFromString("spiffe://a.b/c")}, pub: p256.Public(), serial: big.NewInt(1), nb: now, na: now.Add(time.Minute)},
	}
	for _, kt := range keymanager.KeyTypes {
		parent, _ := testCA(t, kt)
		for name, c := range cases {
			t.Run(kt.String()+"/"+name, func(t *testing.T) {
				lt := template(t, parent, c.pub, c.p, c.serial, c.nb, c.na)
				got, err := lt.tbs()
				if err != nil {
					t.Fatal(err)
				}
				want, err := stdlibTBS(lt, subjectName(c.p), c.pub, parent)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("TBSCertificate differs from CreateCertificate's:\n got %x\nwant %x", got, want)
				}
			})
		}
	}
}

func bytesNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "host" + string(rune('a'+i%26)) + ".example.org"
	}
	return out
}

// An empty subject makes the SAN critical (RFC 5280 4.2.1.6), as
// CreateCertificate does.
func TestLeafTBSEmptySubject(t *testing.T) {
	parent, _ := testCA(t, keymanager.ECP256)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	lt := template(t, parent, key.Public(), X509SVIDParams{SPIFFEID: spiffeid.RequireFromString("spiffe://example.org/w")}, big.NewInt(3), now, now.Add(time.Hour))
	lt.subject = emptyName
	got, err := lt.tbs()
	if err != nil {
		t.Fatal(err)
	}
	want, err := stdlibTBS(lt, pkix.Name{}, key.Public(), parent)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("TBSCertificate differs from CreateCertificate's:\n got %x\nwant %x", got, want)
	}
}

func TestLeafTBSRefusesNonASCIISAN(t *testing.T) {
	parent, _ := testCA(t, keymanager.ECP256)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	lt := template(t, parent, key.Public(), X509SVIDParams{SPIFFEID: spiffeid.RequireFromString("spiffe://example.org/w"), DNSNames: []string{"bücher.example"}}, big.NewInt(3), now, now.Add(time.Hour))
	if _, err := lt.tbs(); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("tbs = %v, want ErrInvalidParams for a non-ASCII DNS name", err)
	}
}

// wrongKey signs with another key than the one it claims.
type wrongKey struct {
	crypto.Signer
	other     crypto.Signer
	inProcess bool
}

func (k wrongKey) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return k.other.Sign(r, d, o)
}
func (k wrongKey) InProcess() bool { return k.inProcess }

// outOfProcess hides a key's InProcess method, as an HSM key has none.
type outOfProcess struct{ crypto.Signer }

func TestSignLeaf(t *testing.T) {
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://example.org/w")
	for _, kt := range keymanager.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			parent, caKey := testCA(t, kt)
			now := time.Now()
			lt := template(t, parent, leafKey.Public(), X509SVIDParams{SPIFFEID: id}, big.NewInt(9), now, now.Add(time.Minute))
			tbs, err := lt.tbs()
			if err != nil {
				t.Fatal(err)
			}
			der, err := signLeaf(tbs, lt.sigAlg, outOfProcess{caKey}, parent)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := leaf.CheckSignatureFrom(parent); err != nil {
				t.Fatalf("certificate does not verify: %v", err)
			}
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(leafKey.Public()) || leaf.URIs[0].String() != id.String() || leaf.IsCA {
				t.Fatal("certificate does not carry the template")
			}
			other, _ := keymanager.GenerateSigner(kt)
			if _, err := signLeaf(tbs, lt.sigAlg, wrongKey{Signer: caKey, other: other}, parent); err == nil {
				t.Fatal("a signer using the wrong key got a certificate out")
			}
		})
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// The key identifier is RFC 5280 method 1, computed here the long way.
func TestSPKIKeyID(t *testing.T) {
	for _, kt := range keymanager.KeyTypes {
		key, _ := keymanager.GenerateSigner(kt)
		der, _ := x509.MarshalPKIXPublicKey(key.Public())
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(der, &spki); err != nil {
			t.Fatal(err)
		}
		want := sha1.Sum(spki.PublicKey.Bytes)
		gotSPKI, got, err := spkiKeyID(key.Public())
		if err != nil || !bytes.Equal(got, want[:]) || !bytes.Equal(gotSPKI, der) {
			t.Fatalf("%s: spkiKeyID = %x, %v; want %x", kt, got, err, want)
		}
	}
}
