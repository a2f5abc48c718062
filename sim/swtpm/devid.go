package swtpm

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// DevIDOptions describe the DevID ProvisionDevID gives a TPM.
type DevIDOptions struct {
	// CA issues the DevID certificate; Intermediates, the chain from CA
	// up to (not including) the root the server trusts, are written after
	// the leaf, as a manufacturer ships them.
	CA            *testpki.CA
	Intermediates []*x509.Certificate
	// KeyType is "rsa" (default) or "ecc".
	KeyType string
	// Password is the DevID key's authorization (devid_password).
	Password string
	// CommonName is the certificate's subject CN; default "devid-<n>".
	CommonName string
	// Dir is where the files go; default the instance's state directory.
	Dir string
}

// DevID is a DevID provisioned in one TPM, with the files SPIRE's agent
// reads (devid_cert_path, devid_pub_path, devid_priv_path).
type DevID struct {
	Cert *x509.Certificate
	// Public is the key's TPMT_PUBLIC and Private its TPM2B_PRIVATE
	// contents: the files' contents, as go-tpm's legacy CreateKey returns
	// them and SPIRE's agent loads them.
	Public, Private             []byte
	CertPath, PubPath, PrivPath string
}

// devIDAttrs are the attributes of SPIRE's simulator DevIDs and of the TCG
// DevID guidance: a signing key generated in and fixed to its TPM.
var devIDAttrs = tpm2.TPMAObject{
	FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
}

// devIDTemplate is the template of a DevID key of keyType, SPIRE's
// simulator's (go-tpm-tools' AK templates with devIDAttrs).
func devIDTemplate(keyType string) (key, srk tpm2.TPMTPublic, err error) {
	switch keyType {
	case "", "rsa":
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: devIDAttrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, tpm.SRKTemplateHighRSA, nil
	case "ecc":
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: devIDAttrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, tpm.SRKTemplateHighECC, nil
	default:
		return key, srk, fmt.Errorf("swtpm: DevID key type %q: want rsa or ecc", keyType)
	}
}

// ProvisionDevID creates a DevID key in instance i under the high-range
// SRK SPIRE's agent loads it under, has opts.CA certify it, and writes the
// certificate chain (PEM) and the key blobs. The instance must not be in
// use: a swtpm serves one connection at a time.
func (f *Fleet) ProvisionDevID(i *Instance, opts DevIDOptions) (*DevID, error) {
	if opts.CA == nil {
		return nil, fmt.Errorf("swtpm: DevID: no CA")
	}
	keyTmpl, srkTmpl, err := devIDTemplate(opts.KeyType)
	if err != nil {
		return nil, err
	}
	t, err := tpm.Open(i.Path)
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: %w", err)
	}
	defer t.Close()
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(srkTmpl)}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: create SRK: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(t) //nolint:errcheck // best effort
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte(opts.Password)}}},
		InPublic:     tpm2.New2B(keyTmpl),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: create key: %w", err)
	}
	pubArea, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: %w", err)
	}
	pub, err := tpm.PublicKeyFromTPM(pubArea)
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, err
	}
	cn := opts.CommonName
	if cn == "" {
		cn = "devid-" + filepath.Base(i.StateDir)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}, opts.CA.Cert, pub, opts.CA.Key)
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("swtpm: DevID: certificate: %w", err)
	}
	dir := opts.Dir
	if dir == "" {
		dir = i.StateDir
	}
	d := &DevID{
		Cert: cert, Public: rsp.OutPublic.Bytes(), Private: rsp.OutPrivate.Buffer,
		CertPath: filepath.Join(dir, "devid.crt.pem"),
		PubPath:  filepath.Join(dir, "devid.pub.blob"),
		PrivPath: filepath.Join(dir, "devid.priv.blob"),
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range opts.Intermediates {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for p, b := range map[string][]byte{d.CertPath: chain, d.PubPath: d.Public, d.PrivPath: d.Private} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, fmt.Errorf("swtpm: DevID: %w", err)
		}
	}
	return d, nil
}
