package tpm

import (
	"crypto"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// AKParams are the public parts of an attestation key that the verifier
// checks: the key and the TPM's own statement that it created the key with
// these attributes. The byte slices are TPM wire structures.
type AKParams struct {
	// Public is the TPMT_PUBLIC of the AK.
	Public []byte `json:"public"`
	// CreateData is the TPMS_CREATION_DATA of the AK.
	CreateData []byte `json:"create_data"`
	// CreateAttestation is the TPMS_ATTEST from TPM2_CertifyCreation.
	CreateAttestation []byte `json:"create_attestation"`
	// CreateSignature is the TPMT_SIGNATURE over CreateAttestation, made
	// by the AK itself.
	CreateSignature []byte `json:"create_signature"`
}

// AK is an attestation key loaded in the TPM. Close flushes it.
type AK struct {
	t      *TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	params AKParams
	public crypto.PublicKey
}

// akTemplate is an ECC P-256 restricted signing key: it signs only
// structures the TPM itself produced (quotes, certifications), never
// caller-chosen digests that could imitate them.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	}),
}

// NewAK creates the attestation key as a primary key of the owner
// hierarchy and certifies its creation with itself. A primary key is
// derived from the owner seed, so the same TPM yields the same AK after a
// reboot until the TPM is cleared; the server pins it per agent.
func (t *TPM) NewAK() (*AK, error) {
	return t.newAK(akTemplate)
}

// newAK is NewAK with a chosen template; tests use it to build AKs that a
// verifier must refuse.
func (t *TPM) newAK(tmpl tpm2.TPMTPublic) (*AK, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: create AK: %w", err)
	}
	ak := &AK{t: t, handle: rsp.ObjectHandle, name: rsp.Name}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		ak.Close()
		return nil, fmt.Errorf("tpm: create AK: %w", err)
	}
	if ak.public, err = PublicKeyFromTPM(pub); err != nil {
		ak.Close()
		return nil, fmt.Errorf("tpm: create AK: %w", err)
	}
	cc, err := tpm2.CertifyCreation{
		SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:   tpm2.NamedHandle{Handle: ak.handle, Name: ak.name},
		CreationHash:   rsp.CreationHash,
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		CreationTicket: rsp.CreationTicket,
	}.Execute(t)
	if err != nil && tmpl.ObjectAttributes.Restricted {
		ak.Close()
		return nil, fmt.Errorf("tpm: certify AK creation: %w", err)
	}
	ak.params = AKParams{
		Public:     tpm2.Marshal(*pub),
		CreateData: rsp.CreationData.Bytes(),
	}
	if err == nil {
		ak.params.CreateAttestation = cc.CertifyInfo.Bytes()
		ak.params.CreateSignature = tpm2.Marshal(cc.Signature)
	}
	return ak, nil
}

// Handle returns the AK's transient handle and name, for callers that run
// their own TPM commands with it (tests build malformed quotes this way).
func (ak *AK) Handle() (tpm2.TPMHandle, tpm2.TPM2BName) { return ak.handle, ak.name }

// Params returns the AK's public parameters for the verifier.
func (ak *AK) Params() AKParams { return ak.params }

// PublicKey returns the AK's public key.
func (ak *AK) PublicKey() crypto.PublicKey { return ak.public }

// Close flushes the AK from the TPM.
func (ak *AK) Close() {
	if ak.handle != 0 {
		ak.t.flush(ak.handle)
		ak.handle = 0
	}
}
