package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// A resident key is an ECDSA P-256 signing key that the TPM generated and
// will not let out: fixedTPM and fixedParent forbid duplication, and
// sensitiveDataOrigin says the TPM drew the private part itself. What the
// holder keeps (Blob) is the key's public area and its private area
// wrapped by the storage root key, which only this TPM can unwrap: a copy
// of the blob is useless on any other TPM, or on this one once its owner
// hierarchy is cleared.
//
// Unlike the AK it is not restricted: it signs digests chosen by the
// caller (CSRs, TLS handshakes), which is what an SVID key does. The AK,
// which signs only TPM-made structures, vouches for it with TPM2_Certify.

// ResidentKeyTemplate is the public template of resident keys; a test
// changes attributes in a copy of it to build keys a verifier must refuse.
var ResidentKeyTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
}

// ResidentKey is a signing key held by a TPM. It implements crypto.Signer;
// each signature loads the key, signs and flushes it, so it occupies none
// of the TPM's few object slots between uses. Its methods are safe for
// concurrent use.
type ResidentKey struct {
	t       *TPM
	public  []byte // TPMT_PUBLIC
	private []byte // TPM2B_PRIVATE contents
	pub     *ecdsa.PublicKey
	pkix    string

	mu sync.Mutex
	// saved is the key's context from TPM2_ContextSave: reloading it costs
	// one command where loading the blob costs re-deriving the SRK.
	saved *tpm2.TPMSContext
}

var _ crypto.Signer = (*ResidentKey)(nil)

// residentBlob is the on-disk form of a resident key.
type residentBlob struct {
	Version int    `json:"version"`
	Public  []byte `json:"public"`
	Private []byte `json:"private"`
}

// MaxResidentBlob bounds a stored blob; real ones are under 300 bytes.
const MaxResidentBlob = 4 << 10

// CreateResidentKey has the TPM generate a resident key under its storage
// root key.
func (t *TPM) CreateResidentKey() (*ResidentKey, error) {
	return t.CreateResidentKeyFrom(ResidentKeyTemplate)
}

// CreateResidentKeyFrom is CreateResidentKey with another template; tests
// use it to make keys that a verifier must refuse (duplicable ones).
func (t *TPM) CreateResidentKeyFrom(tmpl tpm2.TPMTPublic) (*ResidentKey, error) {
	srk, srkName, err := t.loadSRK()
	if err != nil {
		return nil, err
	}
	defer t.flush(srk)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk, Name: srkName, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: create resident key: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: create resident key: %w", err)
	}
	return t.newResidentKey(tpm2.Marshal(*pub), rsp.OutPrivate.Buffer)
}

// LoadResidentKey reads a blob made by ResidentKey.Blob and checks that
// this TPM can load it: a blob from another TPM fails here, not at the
// first signature.
func (t *TPM) LoadResidentKey(blob []byte) (*ResidentKey, error) {
	if len(blob) > MaxResidentBlob {
		return nil, fmt.Errorf("tpm: resident key blob of %d bytes exceeds %d", len(blob), MaxResidentBlob)
	}
	var b residentBlob
	if err := json.Unmarshal(blob, &b); err != nil {
		return nil, fmt.Errorf("tpm: resident key blob: %w", err)
	}
	if b.Version != 1 || len(b.Public) == 0 || len(b.Private) == 0 {
		return nil, fmt.Errorf("tpm: resident key blob: version %d with %d public and %d private bytes", b.Version, len(b.Public), len(b.Private))
	}
	k, err := t.newResidentKey(b.Public, b.Private)
	if err != nil {
		return nil, err
	}
	if err := k.use(func(tpm2.TPMHandle, tpm2.TPM2BName) error { return nil }); err != nil {
		t.forget(k)
		return nil, err
	}
	return k, nil
}

func (t *TPM) newResidentKey(public, private []byte) (*ResidentKey, error) {
	p, err := parseSigningPublic(public)
	if err != nil {
		return nil, fmt.Errorf("tpm: resident key: %w", err)
	}
	ec, ok := p.key.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("tpm: resident key: %T is not an ECDSA key", p.key)
	}
	der, err := x509.MarshalPKIXPublicKey(ec)
	if err != nil {
		return nil, fmt.Errorf("tpm: resident key: %w", err)
	}
	k := &ResidentKey{t: t, public: public, private: private, pub: ec, pkix: string(der)}
	t.remember(k)
	return k, nil
}

// loadSRK creates the storage root key of resident keys.
func (t *TPM) loadSRK() (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	return t.createSRK(tpm2.ECCSRKTemplate, nil)
}

// createSRK creates the storage root key of tmpl in the owner hierarchy
// (ownerAuth is its password, usually empty): a primary key, which the
// TPM derives again identically from its owner seed, so it need not be
// kept loaded or persisted.
func (t *TPM) createSRK(tmpl tpm2.TPMTPublic, ownerAuth []byte) (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(ownerAuth)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return 0, tpm2.TPM2BName{}, fmt.Errorf("tpm: create SRK: %w", err)
	}
	return rsp.ObjectHandle, rsp.Name, nil
}

// use loads the key, runs fn with its handle and flushes it. A saved
// context is tried first; a TPM that restarted since refuses it, and the
// blob is loaded again under the SRK.
func (k *ResidentKey) use(fn func(tpm2.TPMHandle, tpm2.TPM2BName) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, name, err := k.load()
	if err != nil {
		return err
	}
	defer k.t.flush(h)
	return fn(h, name)
}

func (k *ResidentKey) load() (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	name := k.name()
	if k.saved != nil {
		rsp, err := tpm2.ContextLoad{Context: *k.saved}.Execute(k.t)
		if err == nil {
			return tpm2.TPMHandle(rsp.LoadedHandle), name, nil
		}
		k.saved = nil
	}
	srk, srkName, err := k.t.loadSRK()
	if err != nil {
		return 0, name, err
	}
	defer k.t.flush(srk)
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.public)
	if err != nil {
		return 0, name, fmt.Errorf("tpm: resident key: public area: %w", err)
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk, Name: srkName, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: k.private},
		InPublic:     tpm2.New2B(*pub),
	}.Execute(k.t)
	if err != nil {
		return 0, name, fmt.Errorf("tpm: load resident key (not made by this TPM, or its owner hierarchy was cleared): %w", err)
	}
	if ctx, err := (tpm2.ContextSave{SaveHandle: rsp.ObjectHandle}).Execute(k.t); err == nil {
		k.saved = &ctx.Context
	}
	return rsp.ObjectHandle, rsp.Name, nil
}

// name is the key's TPM name: nameAlg (SHA-256) || SHA-256(TPMT_PUBLIC).
func (k *ResidentKey) name() tpm2.TPM2BName {
	return tpm2.TPM2BName{Buffer: objectName(k.public)}
}

// Public returns the key's public key (an *ecdsa.PublicKey).
func (k *ResidentKey) Public() crypto.PublicKey { return k.pub }

// PublicArea returns the key's TPMT_PUBLIC.
func (k *ResidentKey) PublicArea() []byte { return append([]byte(nil), k.public...) }

// Blob returns what must be stored to use the key again: its public area
// and its private area wrapped by this TPM's storage root key.
func (k *ResidentKey) Blob() ([]byte, error) {
	return json.Marshal(residentBlob{Version: 1, Public: k.public, Private: k.private})
}

// Sign signs digest, a SHA-256 hash, with the key in the TPM, returning
// an ASN.1 ECDSA signature as crypto/ecdsa does. The key's scheme is
// ECDSA-SHA256, so other hashes are refused; P-256 certificates and TLS
// 1.3's ecdsa_secp256r1_sha256 use nothing else.
func (k *ResidentKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 || len(digest) != crypto.SHA256.Size() {
		return nil, errors.New("tpm: resident key signs SHA-256 digests only")
	}
	var sig []byte
	err := k.use(func(h tpm2.TPMHandle, name tpm2.TPM2BName) error {
		rsp, err := tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(k.t)
		if err != nil {
			return fmt.Errorf("tpm: sign with resident key: %w", err)
		}
		ec, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return fmt.Errorf("tpm: sign with resident key: %w", err)
		}
		sig, err = asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(ec.SignatureR.Buffer),
			new(big.Int).SetBytes(ec.SignatureS.Buffer),
		})
		return err
	})
	return sig, err
}

// Certify has ak state that this key lives in the same TPM, with
// qualifyingData in the statement so that it answers one challenge only.
func (t *TPM) Certify(ak *AK, k *ResidentKey, qualifyingData []byte) (*Certification, error) {
	if k.t != t {
		return nil, errors.New("tpm: certify: the key belongs to another TPM connection")
	}
	var c *Certification
	err := k.use(func(h tpm2.TPMHandle, name tpm2.TPM2BName) error {
		rsp, err := tpm2.Certify{
			ObjectHandle:   tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
			SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("tpm: certify resident key: %w", err)
		}
		c = &Certification{Public: k.PublicArea(), Attest: rsp.CertifyInfo.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}
		return nil
	})
	return c, err
}

// Certification is an AK's TPM2_Certify statement about a key.
type Certification struct {
	// Public is the certified key's TPMT_PUBLIC.
	Public []byte `json:"public"`
	// Attest is the TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY.
	Attest []byte `json:"attest"`
	// Signature is the AK's TPMT_SIGNATURE over Attest.
	Signature []byte `json:"signature"`
}

// Close forgets the key: ResidentKeyFor no longer returns it. The key
// itself lives on in its blob.
func (k *ResidentKey) Close() { k.t.forget(k) }

// ResidentKeyFor returns the resident key with public key pub that this
// connection created or loaded and that was not closed: the node attestor
// asks it which TPM key a CSR is for, to certify it.
func (t *TPM) ResidentKeyFor(pub crypto.PublicKey) (*ResidentKey, bool) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, false
	}
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	k, ok := t.keys[string(der)]
	return k, ok
}

func (t *TPM) remember(k *ResidentKey) {
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	if t.keys == nil {
		t.keys = map[string]*ResidentKey{}
	}
	t.keys[k.pkix] = k
}

func (t *TPM) forget(k *ResidentKey) {
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	if t.keys[k.pkix] == k {
		delete(t.keys, k.pkix)
	}
}
