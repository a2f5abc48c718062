// Package tpm attests an agent's node with its TPM 2.0: it presents the
// EK certificate and a TPM-resident attestation key, then answers the
// server's challenge by activating the credential and quoting PCRs over the
// server's nonce bound to the agent's CSR key. The proof can be repeated,
// so the agent re-attests instead of renewing and the server sees the
// machine's current state.
//
// The AK is a primary key, which the TPM derives again identically from
// its owner seed; each call creates and flushes it, so nothing stays
// loaded in the TPM between the attestation steps. The TPM connection is
// shared (tpm.Shared) with KeyManager "tpm": when the CSR's key is one it
// holds, the AK certifies it (TPM2_Certify) in the challenge response.
package tpm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// Type is the attestation type.
const Type = "tpm"

// PluginData is the plugin_data block of NodeAttestor "tpm".
type PluginData struct {
	// TPMPath is /dev/tpmrm0 (default), tcp://host:port or unix:///path.
	TPMPath string `hcl:"tpm_path"`
	// EKAlgorithm picks the EK certificate, "rsa" or "ecc"; empty takes
	// the first found.
	EKAlgorithm string `hcl:"ek_algorithm"`
	// EventLogPath is the TCG event log; empty means the kernel's for a
	// device TPM and none for a simulator.
	EventLogPath string `hcl:"event_log_path"`
}

// Attestor produces TPM evidence.
type Attestor struct {
	cfg PluginData

	mu     sync.Mutex
	csr    []byte // CSR sent in AttestationData
	akHash []byte // AK public sent in AttestationData
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor for the TPM in d.
func New(d PluginData) (*Attestor, error) {
	if d.TPMPath == "" {
		d.TPMPath = tpm.DefaultPath
	}
	switch d.EKAlgorithm {
	case "", "rsa", "ecc":
	default:
		return nil, fmt.Errorf("tpm: ek_algorithm %q: want \"rsa\" or \"ecc\"", d.EKAlgorithm)
	}
	if d.EventLogPath == "" && strings.HasPrefix(d.TPMPath, "/dev/") {
		d.EventLogPath = tpm.DefaultEventLogPath
	}
	return &Attestor{cfg: d}, nil
}

// TPMPath is the TPM the attestor proves; KeyManager "tpm" keys are
// certified only when they live in the same one.
func (a *Attestor) TPMPath() string { return a.cfg.TPMPath }

// Type returns "tpm".
func (*Attestor) Type() string { return Type }

func (a *Attestor) ekOpts() []tpm.EKOption {
	if a.cfg.EKAlgorithm == "" {
		return nil
	}
	return []tpm.EKOption{tpm.WithEKAlgorithm(a.cfg.EKAlgorithm)}
}

// AttestationData returns the EK certificate, the AK parameters and csr,
// whose key the quote in Respond binds; without a CSR there is nothing to
// bind, so it fails.
func (a *Attestor) AttestationData(_ context.Context, csr []byte) ([]byte, error) {
	if len(csr) == 0 {
		return nil, errors.New("tpm: no CSR to bind the attestation to")
	}
	// Parse it now rather than in Respond: a CSR the server cannot use
	// should fail before the TPM is touched.
	if _, err := tpm.CSRKeyDER(csr); err != nil {
		return nil, err
	}
	csr = bytes.Clone(csr)
	t, release, err := tpm.Shared(a.cfg.TPMPath)
	if err != nil {
		return nil, err
	}
	defer release()
	ek, err := t.EK(a.ekOpts()...)
	if err != nil {
		return nil, err
	}
	ak, err := t.NewAK()
	if err != nil {
		return nil, err
	}
	params := ak.Params()
	ak.Close()
	a.mu.Lock()
	a.csr, a.akHash = csr, params.Public
	a.mu.Unlock()
	return json.Marshal(tpm.AttestationData{EKCert: ek.Certificate, EKPublic: ek.Public, AK: params, CSR: csr})
}

// Respond activates the credential and quotes the requested PCRs.
func (a *Attestor) Respond(ctx context.Context, challenge []byte) ([]byte, error) {
	c, err := tpm.ParseChallenge(challenge)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	csr, akPub := a.csr, a.akHash
	a.mu.Unlock()
	if csr == nil {
		return nil, errors.New("tpm: challenge before attestation data")
	}
	keyDER, err := tpm.CSRKeyDER(csr)
	if err != nil {
		return nil, err
	}
	t, release, err := tpm.Shared(a.cfg.TPMPath)
	if err != nil {
		return nil, err
	}
	defer release()
	ek, err := t.EK(a.ekOpts()...)
	if err != nil {
		return nil, err
	}
	ak, err := t.NewAK()
	if err != nil {
		return nil, err
	}
	defer ak.Close()
	if !bytes.Equal(ak.Params().Public, akPub) {
		return nil, errors.New("tpm: the AK changed since the attestation data (TPM cleared?)")
	}
	secret, err := t.ActivateCredential(ak, ek, c.Credential)
	if err != nil {
		return nil, err
	}
	q, err := t.Quote(ak, tpm.QualifyingData(c.Nonce, keyDER), c.PCRs)
	if err != nil {
		return nil, err
	}
	var log []byte
	if a.cfg.EventLogPath != "" {
		if log, err = tpm.ReadEventLog(a.cfg.EventLogPath); err != nil {
			return nil, err
		}
	}
	resp := tpm.ChallengeResponse{Secret: secret, Nonce: c.Nonce, Quote: *q, EventLog: log}
	// A CSR key that KeyManager "tpm" holds in this TPM is certified by
	// the AK the server has just tied to the TPM, proving that the agent's
	// key can never leave it. Other keys go without the proof.
	if pub, err := x509.ParsePKIXPublicKey(keyDER); err == nil {
		if key, ok := t.ResidentKeyFor(pub); ok {
			if resp.AgentKey, err = t.Certify(ak, key, tpm.AgentKeyQualifyingData(c.Nonce, keyDER)); err != nil {
				return nil, err
			}
		}
	}
	return json.Marshal(resp)
}
