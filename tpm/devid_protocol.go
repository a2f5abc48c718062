package tpm

import (
	"errors"
	"fmt"
)

// The node attestation exchange of the "tpm_devid" NodeAttestor, SPIRE's
// wire format (pkg/common/plugin/tpmdevid) byte for byte, so that SPIRE's
// agents attest to our server and ours to SPIRE's: the agent sends
// DevIDAttestation, the server one DevIDChallenge, the agent a
// DevIDChallengeResponse. SPIRE's structs carry no JSON tags, so the field
// names are the Go names; the tags here spell them out so that a rename
// cannot change the wire. Byte fields are base64 in JSON, as
// encoding/json writes []byte.

// Size limits of the tpm_devid messages; anything larger is refused
// before parsing. A DevID chain is a few certificates and the TPM blobs
// are under 1 KiB each.
const (
	MaxDevIDAttestation       = 64 << 10
	MaxDevIDChallenge         = 8 << 10
	MaxDevIDChallengeResponse = 8 << 10
	// MaxDevIDChain bounds the certificates of DevIDAttestation.DevIDCert.
	MaxDevIDChain = 8
)

// DevIDAttestation is the agent's first message.
type DevIDAttestation struct {
	// DevIDCert is the DER DevID certificate, then its intermediates.
	DevIDCert [][]byte `json:"DevIDCert"`
	// DevIDPub is the DevID key's TPMT_PUBLIC.
	DevIDPub []byte `json:"DevIDPub"`
	// EKCert is the DER RSA EK certificate (NV index 0x01c00002).
	EKCert []byte `json:"EKCert"`
	// EKPub is the TPMT_PUBLIC of the EK made from the TCG default RSA
	// template.
	EKPub []byte `json:"EKPub"`
	// AKPub is the TPMT_PUBLIC of the attestation key, an RSA restricted
	// signing key created for this attestation.
	AKPub []byte `json:"AKPub"`
	// CertifiedDevID is the TPMS_ATTEST of TPM2_Certify of the DevID key
	// by the AK, and CertificationSignature the AK's TPMT_SIGNATURE over
	// it.
	CertifiedDevID         []byte `json:"CertifiedDevID"`
	CertificationSignature []byte `json:"CertificationSignature"`
}

// DevIDChallenge is the server's one challenge.
type DevIDChallenge struct {
	// DevID is the nonce the DevID key must sign (proof of possession).
	DevID []byte `json:"DevID"`
	// CredActivation is a credential for the AK, encrypted to the EK
	// (proof of residency).
	CredActivation *DevIDCredential `json:"CredActivation"`
}

// DevIDCredential is a MakeCredential challenge: the TPM2B_ID_OBJECT and
// TPM2B_ENCRYPTED_SECRET contents, without their size fields.
type DevIDCredential struct {
	Credential []byte `json:"Credential"`
	Secret     []byte `json:"Secret"`
}

// DevIDChallengeResponse is the agent's answer.
type DevIDChallengeResponse struct {
	// DevID is the DevID key's signature over SHA-256 of the nonce:
	// PKCS #1 v1.5 for RSA, ASN.1 DER for ECDSA.
	DevID []byte `json:"DevID"`
	// CredActivation is the secret the TPM released.
	CredActivation []byte `json:"CredActivation"`
}

// ParseDevIDAttestation decodes the agent's first message and checks that
// every part the server verifies is present.
func ParseDevIDAttestation(b []byte) (*DevIDAttestation, error) {
	var d DevIDAttestation
	if err := decode(b, MaxDevIDAttestation, &d); err != nil {
		return nil, fmt.Errorf("tpm: devid attestation: %w", err)
	}
	switch {
	case len(d.DevIDCert) == 0:
		return nil, errors.New("tpm: devid attestation: no DevID certificate")
	case len(d.DevIDCert) > MaxDevIDChain:
		return nil, fmt.Errorf("tpm: devid attestation: %d DevID certificates, at most %d allowed", len(d.DevIDCert), MaxDevIDChain)
	case len(d.DevIDPub) == 0:
		return nil, errors.New("tpm: devid attestation: missing DevID key public blob")
	case len(d.AKPub) == 0:
		return nil, errors.New("tpm: devid attestation: missing attestation key public blob")
	case len(d.EKCert) == 0:
		return nil, errors.New("tpm: devid attestation: missing endorsement certificate")
	case len(d.EKPub) == 0:
		return nil, errors.New("tpm: devid attestation: missing endorsement key public blob")
	case len(d.CertifiedDevID) == 0 || len(d.CertificationSignature) == 0:
		return nil, errors.New("tpm: devid attestation: missing certification of the DevID key")
	}
	return &d, nil
}

// ParseDevIDChallenge decodes the server's challenge.
func ParseDevIDChallenge(b []byte) (*DevIDChallenge, error) {
	var c DevIDChallenge
	if err := decode(b, MaxDevIDChallenge, &c); err != nil {
		return nil, fmt.Errorf("tpm: devid challenge: %w", err)
	}
	if len(c.DevID) == 0 {
		return nil, errors.New("tpm: devid challenge: no proof-of-possession nonce")
	}
	if c.CredActivation == nil || len(c.CredActivation.Credential) == 0 || len(c.CredActivation.Secret) == 0 {
		return nil, errors.New("tpm: devid challenge: no credential activation challenge")
	}
	return &c, nil
}

// ParseDevIDChallengeResponse decodes the agent's answer.
func ParseDevIDChallengeResponse(b []byte) (*DevIDChallengeResponse, error) {
	var r DevIDChallengeResponse
	if err := decode(b, MaxDevIDChallengeResponse, &r); err != nil {
		return nil, fmt.Errorf("tpm: devid challenge response: %w", err)
	}
	if len(r.DevID) == 0 || len(r.CredActivation) == 0 {
		return nil, errors.New("tpm: devid challenge response: missing signature or credential secret")
	}
	return &r, nil
}
