package tpm

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
)

// The node attestation exchange of the "tpm" NodeAttestor: the agent sends
// AttestationData, the server answers with one Challenge, the agent
// returns a ChallengeResponse. JSON keeps it readable in logs and fuzzable;
// the byte fields are TPM wire structures.

// Size limits of the messages; anything larger is refused before parsing.
const (
	MaxAttestationData   = 64 << 10
	MaxChallenge         = 16 << 10
	MaxChallengeResponse = 1 << 20 // event logs of real machines reach 100s of KiB
)

// AttestationData is the agent's first message.
type AttestationData struct {
	// EKCert is the DER EK certificate; empty for TPMs without one, which
	// a server can admit only by an EK hash allow-list.
	EKCert []byte `json:"ek_cert,omitempty"`
	// EKPublic is the EK's TPMT_PUBLIC; the server uses it only when
	// there is no certificate.
	EKPublic []byte   `json:"ek_public,omitempty"`
	AK       AKParams `json:"ak"`
	// CSR is the DER CSR of the agent SVID the attestation is for; the
	// quote binds its public key.
	CSR []byte `json:"csr"`
}

// Challenge is the server's one challenge.
type Challenge struct {
	Credential Credential `json:"credential"`
	// Nonce is fresh, single-use and expires.
	Nonce []byte `json:"nonce"`
	// PCRs is the SHA-256 PCR selection to quote.
	PCRs []int `json:"pcrs"`
}

// ChallengeResponse is the agent's answer.
type ChallengeResponse struct {
	// Secret is the credential secret the TPM released.
	Secret []byte `json:"secret"`
	// Nonce echoes Challenge.Nonce.
	Nonce []byte `json:"nonce"`
	Quote Quote  `json:"quote"`
	// EventLog is the TCG event log, when the machine has one.
	EventLog []byte `json:"event_log,omitempty"`
	// AgentKey, when the CSR's key is resident in the TPM, is the AK's
	// TPM2_Certify of it over AgentKeyQualifyingData(nonce, CSR key): the
	// proof that the agent's SVID key can never leave this TPM.
	AgentKey *Certification `json:"agent_key,omitempty"`
}

// QualifyingData binds a quote to the server's nonce and to the key of
// the CSR being attested: SHA-256(nonce || SHA-256(PKIX DER of the key)).
// A quote is thus useless for any other attestation or any other key.
func QualifyingData(nonce, csrKeyDER []byte) []byte {
	k := sha256.Sum256(csrKeyDER)
	h := sha256.New()
	h.Write(nonce)
	h.Write(k[:])
	return h.Sum(nil)
}

// CSRKeyDER parses a DER CSR, checks its self-signature, and returns the
// PKIX DER of its public key.
func CSRKeyDER(csr []byte) ([]byte, error) {
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, fmt.Errorf("tpm: CSR: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("tpm: CSR: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("tpm: CSR: %w", err)
	}
	return der, nil
}

// ParseAttestationData decodes the agent's first message.
func ParseAttestationData(b []byte) (*AttestationData, error) {
	var d AttestationData
	if err := decode(b, MaxAttestationData, &d); err != nil {
		return nil, fmt.Errorf("tpm: attestation data: %w", err)
	}
	if len(d.EKCert) == 0 && len(d.EKPublic) == 0 {
		return nil, errors.New("tpm: attestation data: no EK certificate or EK public key")
	}
	if len(d.AK.Public) == 0 || len(d.CSR) == 0 {
		return nil, errors.New("tpm: attestation data: missing AK or CSR")
	}
	return &d, nil
}

// ParseChallenge decodes the server's challenge.
func ParseChallenge(b []byte) (*Challenge, error) {
	var c Challenge
	if err := decode(b, MaxChallenge, &c); err != nil {
		return nil, fmt.Errorf("tpm: challenge: %w", err)
	}
	if len(c.Nonce) == 0 || len(c.PCRs) == 0 || len(c.Credential.IDObject) == 0 {
		return nil, errors.New("tpm: challenge: missing nonce, PCR selection or credential")
	}
	return &c, nil
}

// ParseChallengeResponse decodes the agent's answer.
func ParseChallengeResponse(b []byte) (*ChallengeResponse, error) {
	var r ChallengeResponse
	if err := decode(b, MaxChallengeResponse, &r); err != nil {
		return nil, fmt.Errorf("tpm: challenge response: %w", err)
	}
	if len(r.Secret) == 0 || len(r.Nonce) == 0 || len(r.Quote.Attest) == 0 {
		return nil, errors.New("tpm: challenge response: missing secret, nonce or quote")
	}
	return &r, nil
}

func decode(b []byte, limit int, v any) error {
	if len(b) > limit {
		return fmt.Errorf("%d bytes exceed the limit of %d", len(b), limit)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return err
	}
	return nil
}
