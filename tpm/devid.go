package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"

	"github.com/google/go-tpm/tpm2"
)

// The client half of the "tpm_devid" method, as SPIRE's agent does it
// (pkg/agent/plugin/nodeattestor/tpmdevid/tpmutil): a DevID key provisioned
// out of band lives under the storage root key of the TCG high-range
// templates (H-1 for RSA keys, H-2 for ECC), kept as the two blobs
// TPM2_Create returned; an RSA attestation key made for the attestation
// certifies it (TPM2_Certify); the RSA EK of the TCG default template,
// whose certificate is at 0x01c00002, releases the server's credential to
// that AK. Every object is loaded for one step and flushed, so a swtpm's
// three object slots suffice and nothing stays loaded between steps.

// DevIDEKCertIndex is the NV index of the RSA 2048 EK certificate (TCG EK
// Credential Profile), the only one SPIRE's tpm_devid reads.
const DevIDEKCertIndex = 0x01c00002

// MaxDevIDBlob bounds a DevID public or private blob file.
const MaxDevIDBlob = 4 << 10

// SRKTemplateHighRSA is the TCG high-range RSA 2048 storage root key
// template (H-1, EK Credential Profile 2.3): the reference template with an
// empty unique field. SPIRE's agent loads RSA DevID keys, and creates its
// AK, under the SRK made from it.
var SRKTemplateHighRSA = func() tpm2.TPMTPublic {
	t := tpm2.RSASRKTemplate
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	return t
}()

// SRKTemplateHighECC is the TCG high-range ECC P-256 storage root key
// template (H-2), under which SPIRE's agent loads ECC DevID keys.
var SRKTemplateHighECC = func() tpm2.TPMTPublic {
	t := tpm2.ECCSRKTemplate
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	return t
}()

// devIDAKTemplate is go-tpm-tools' AKTemplateRSA, SPIRE's AK: an RSA 2048
// restricted signing key with RSASSA-SHA256. SPIRE's server verifies only
// RSA PKCS #1 v1.5 certifications, so the AK must be RSA.
var devIDAKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgRSA,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Scheme: tpm2.TPMTRSAScheme{
			Scheme:  tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		KeyBits: 2048,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
}

// DevIDPasswords are the authorizations SPIRE's agent takes in its
// configuration; empty means none.
type DevIDPasswords struct {
	EndorsementHierarchy string
	OwnerHierarchy       string
	DevIDKey             string
}

// DevID is a DevID key of this TPM: its blobs and the passwords to use
// it. Its methods are safe for concurrent use (the TPM serializes).
type DevID struct {
	t       *TPM
	public  []byte // TPMT_PUBLIC
	private []byte // TPM2B_PRIVATE contents
	pub     *signingPublic
	srk     tpm2.TPMTPublic
	pw      DevIDPasswords
}

// DevIDAK is the attestation key of one tpm_devid attestation, kept as
// its blobs between the steps: it is created in AttestationData and must
// release the credential in the challenge that follows.
type DevIDAK struct {
	public  []byte
	private []byte
	auth    []byte
}

// Public returns the AK's TPMT_PUBLIC.
func (ak *DevIDAK) Public() []byte { return append([]byte(nil), ak.public...) }

// LoadDevID checks that this TPM can load the DevID key of public (a
// TPMT_PUBLIC) and private (TPM2B_PRIVATE contents), the two files SPIRE's
// devid_pub_path and devid_priv_path name: blobs of another TPM fail here.
func (t *TPM) LoadDevID(public, private []byte, pw DevIDPasswords) (*DevID, error) {
	if len(public) > MaxDevIDBlob || len(private) > MaxDevIDBlob {
		return nil, errors.New("tpm: devid: key blob too large")
	}
	p, err := parseSigningPublic(public)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: public blob: %w", err)
	}
	d := &DevID{t: t, public: public, private: private, pub: p, pw: pw}
	switch p.key.(type) {
	case *rsa.PublicKey:
		d.srk = SRKTemplateHighRSA
	case *ecdsa.PublicKey:
		d.srk = SRKTemplateHighECC
	}
	h, _, err := d.load()
	if err != nil {
		return nil, err
	}
	t.flush(h)
	return d, nil
}

// PublicKey returns the DevID public key.
func (d *DevID) PublicKey() crypto.PublicKey { return d.pub.key }

// createSRK derives the storage root key of tmpl in the owner hierarchy.
func (d *DevID) createSRK(tmpl tpm2.TPMTPublic) (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	h, name, err := d.t.createSRK(tmpl, []byte(d.pw.OwnerHierarchy))
	if err != nil {
		return 0, tpm2.TPM2BName{}, fmt.Errorf("tpm: devid: %w", err)
	}
	return h, name, nil
}

// loadUnder loads a key's blobs under the SRK of tmpl and flushes the SRK.
func (d *DevID) loadUnder(tmpl tpm2.TPMTPublic, public, private []byte) (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	srk, srkName, err := d.createSRK(tmpl)
	if err != nil {
		return 0, tpm2.TPM2BName{}, err
	}
	defer d.t.flush(srk)
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk, Name: srkName, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](public),
	}.Execute(d.t)
	if err != nil {
		return 0, tpm2.TPM2BName{}, err
	}
	return rsp.ObjectHandle, rsp.Name, nil
}

func (d *DevID) load() (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	h, name, err := d.loadUnder(d.srk, d.public, d.private)
	if err != nil {
		return 0, name, fmt.Errorf("tpm: devid: load DevID key (blobs of another TPM, or its owner hierarchy was cleared): %w", err)
	}
	return h, name, nil
}

// NewAK creates an attestation key under the high-range RSA SRK, with a
// random authorization known only to this process.
func (d *DevID) NewAK() (*DevIDAK, error) {
	auth := make([]byte, 32)
	if _, err := rand.Read(auth); err != nil {
		return nil, fmt.Errorf("tpm: devid: AK password: %w", err)
	}
	srk, srkName, err := d.createSRK(SRKTemplateHighRSA)
	if err != nil {
		return nil, err
	}
	defer d.t.flush(srk)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk, Name: srkName, Auth: tpm2.PasswordAuth(nil)},
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: auth}}},
		InPublic:     tpm2.New2B(devIDAKTemplate),
	}.Execute(d.t)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: create AK: %w", err)
	}
	return &DevIDAK{public: rsp.OutPublic.Bytes(), private: rsp.OutPrivate.Buffer, auth: auth}, nil
}

func (d *DevID) loadAK(ak *DevIDAK) (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	h, name, err := d.loadUnder(SRKTemplateHighRSA, ak.public, ak.private)
	if err != nil {
		return 0, name, fmt.Errorf("tpm: devid: load AK: %w", err)
	}
	return h, name, nil
}

// Certify has ak certify the DevID key: the statement that both live in
// this TPM. It returns the TPMS_ATTEST and the AK's TPMT_SIGNATURE, with
// no qualifying data, as SPIRE's agent sends them.
func (d *DevID) Certify(ak *DevIDAK) (attest, sig []byte, err error) {
	kh, kname, err := d.load()
	if err != nil {
		return nil, nil, err
	}
	defer d.t.flush(kh)
	ah, aname, err := d.loadAK(ak)
	if err != nil {
		return nil, nil, err
	}
	defer d.t.flush(ah)
	rsp, err := tpm2.Certify{
		ObjectHandle: tpm2.AuthHandle{Handle: kh, Name: kname, Auth: tpm2.PasswordAuth([]byte(d.pw.DevIDKey))},
		SignHandle:   tpm2.AuthHandle{Handle: ah, Name: aname, Auth: tpm2.PasswordAuth(ak.auth)},
		InScheme:     tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(d.t)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: devid: certify DevID key: %w", err)
	}
	return rsp.CertifyInfo.Bytes(), tpm2.Marshal(rsp.Signature), nil
}

// Sign signs nonce with the DevID key under its own scheme: the TPM hashes
// nonce (TPM2_Hash, whose ticket lets a restricted DevID key sign too) and
// signs the digest. RSA signatures are returned raw, ECDSA ones in ASN.1
// DER, as x509.Certificate.CheckSignature takes them.
func (d *DevID) Sign(nonce []byte) ([]byte, error) {
	alg, err := tpmHashAlg(d.pub.sigHash)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: sign: %w", err)
	}
	hr, err := tpm2.Hash{
		Data:      tpm2.TPM2BMaxBuffer{Buffer: nonce},
		HashAlg:   alg,
		Hierarchy: tpm2.TPMRHOwner,
	}.Execute(d.t)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: hash nonce: %w", err)
	}
	kh, kname, err := d.load()
	if err != nil {
		return nil, err
	}
	defer d.t.flush(kh)
	rsp, err := tpm2.Sign{
		KeyHandle:  tpm2.AuthHandle{Handle: kh, Name: kname, Auth: tpm2.PasswordAuth([]byte(d.pw.DevIDKey))},
		Digest:     hr.OutHash,
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Validation: hr.Validation,
	}.Execute(d.t)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: sign nonce: %w", err)
	}
	switch rsp.Signature.SigAlg {
	case tpm2.TPMAlgRSASSA:
		s, err := rsp.Signature.Signature.RSASSA()
		if err != nil {
			return nil, fmt.Errorf("tpm: devid: sign nonce: %w", err)
		}
		return s.Sig.Buffer, nil
	case tpm2.TPMAlgECDSA:
		s, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return nil, fmt.Errorf("tpm: devid: sign nonce: %w", err)
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer),
		})
	default:
		return nil, fmt.Errorf("tpm: devid: sign nonce: signature algorithm %#x", rsp.Signature.SigAlg)
	}
}

func tpmHashAlg(h crypto.Hash) (tpm2.TPMAlgID, error) {
	switch h {
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	default:
		return 0, fmt.Errorf("hash %v not supported", h)
	}
}

// createEK creates the EK of the TCG default RSA template (L-1) with the
// endorsement hierarchy password.
func (d *DevID) createEK() (*tpm2.CreatePrimaryResponse, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth([]byte(d.pw.EndorsementHierarchy))},
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(d.t)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: create EK: %w", err)
	}
	return rsp, nil
}

// EK returns the RSA EK certificate (DER, without the padding some TPMs
// leave in the index) and the TPMT_PUBLIC of the EK.
func (d *DevID) EK() (cert, public []byte, err error) {
	der, err := d.readNV(DevIDEKCertIndex)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: devid: read EK certificate at %#x: %w", DevIDEKCertIndex, err)
	}
	rsp, err := d.createEK()
	if err != nil {
		return nil, nil, err
	}
	defer d.t.flush(rsp.ObjectHandle)
	return trimDER(der), rsp.OutPublic.Bytes(), nil
}

// readNV reads an NV index with its own authorization when it allows
// that (EK certificate indices do), else the owner's password.
func (d *DevID) readNV(idx uint32) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(idx)}.Execute(d.t)
	if err != nil {
		return nil, err
	}
	nvPub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMHandle(idx), Name: pubRsp.NVName, Auth: tpm2.PasswordAuth(nil)}
	if !nvPub.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth([]byte(d.pw.OwnerHierarchy))}
	}
	const chunk = 768
	size := int(nvPub.DataSize)
	out := make([]byte, 0, size)
	for off := 0; off < size; off += chunk {
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(idx), Name: pubRsp.NVName},
			Size:       uint16(min(chunk, size-off)),
			Offset:     uint16(off),
		}.Execute(d.t)
		if err != nil {
			return nil, err
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// ActivateCredential has the EK release the secret of cred to ak, which
// it does only if ak is loaded in the same TPM. The EK's policy
// (PolicySecret of the endorsement hierarchy) is met with the endorsement
// password.
func (d *DevID) ActivateCredential(ak *DevIDAK, cred *DevIDCredential) ([]byte, error) {
	if cred == nil {
		return nil, errors.New("tpm: devid: no credential")
	}
	ah, aname, err := d.loadAK(ak)
	if err != nil {
		return nil, err
	}
	defer d.t.flush(ah)
	ek, err := d.createEK()
	if err != nil {
		return nil, err
	}
	defer d.t.flush(ek.ObjectHandle)
	sess, closeSess, err := tpm2.PolicySession(d.t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: activate credential: policy session: %w", err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicySecret{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Name: tpm2.HandleName(tpm2.TPMRHEndorsement),
			Auth: tpm2.PasswordAuth([]byte(d.pw.EndorsementHierarchy))},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(d.t); err != nil {
		return nil, fmt.Errorf("tpm: devid: activate credential: policy secret: %w", err)
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: ah, Name: aname, Auth: tpm2.PasswordAuth(ak.auth)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: cred.Credential},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: cred.Secret},
	}.Execute(d.t)
	if err != nil {
		return nil, fmt.Errorf("tpm: devid: activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// devicePattern are the device names DetectDevice accepts, in order of
// preference: the kernel's resource-managed device first.
var devicePatterns = []*regexp.Regexp{regexp.MustCompile(`^tpmrm\d+$`), regexp.MustCompile(`^tpm\d+$`)}

// DetectDevice finds the one TPM device under dir (/dev), as SPIRE's agent
// does when tpm_device_path is empty: a tpmrmN if there is exactly one,
// else a tpmN if there is exactly one.
func DetectDevice(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("tpm: detect device: %w", err)
	}
	for _, re := range devicePatterns {
		var found []string
		for _, e := range entries {
			if re.MatchString(e.Name()) {
				found = append(found, filepath.Join(dir, e.Name()))
			}
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return found[0], nil
		default:
			return "", fmt.Errorf("tpm: detect device: more than one TPM device in %s (%v); set tpm_device_path", dir, found)
		}
	}
	return "", fmt.Errorf("tpm: detect device: no TPM device in %s; set tpm_device_path", dir)
}
