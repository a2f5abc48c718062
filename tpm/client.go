package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Credential is a MakeCredential challenge: a secret encrypted so that
// only the TPM holding the EK can release it, and only to the AK whose
// name it was made for.
type Credential struct {
	// IDObject is the TPM2B_ID_OBJECT contents (integrity HMAC and
	// encrypted secret).
	IDObject []byte `json:"id_object"`
	// EncryptedSecret is the TPM2B_ENCRYPTED_SECRET contents: the seed,
	// encrypted to the EK.
	EncryptedSecret []byte `json:"encrypted_secret"`
}

// Quote is a signed statement of PCR values.
type Quote struct {
	// Attest is the TPMS_ATTEST the TPM signed.
	Attest []byte `json:"attest"`
	// Signature is the TPMT_SIGNATURE over Attest.
	Signature []byte `json:"signature"`
	// PCRs are the SHA-256 bank values of the quoted PCRs, which the
	// verifier hashes and compares with the quote's digest.
	PCRs map[int][]byte `json:"pcrs"`
}

// ActivateCredential has the TPM decrypt cred with the EK and release the
// secret, which it does only if the AK named in cred is loaded in the same
// TPM.
func (t *TPM) ActivateCredential(ak *AK, ek *EK, cred Credential) ([]byte, error) {
	ekHandle, ekName, done, err := t.loadEK(ek)
	if err != nil {
		return nil, err
	}
	defer done()
	alg := ek.pub.NameAlg
	sess, closeSess, err := tpm2.PolicySession(t, alg, 16)
	if err != nil {
		return nil, fmt.Errorf("tpm: activate credential: policy session: %w", err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Name: tpm2.HandleName(tpm2.TPMRHEndorsement), Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(t); err != nil {
		return nil, fmt.Errorf("tpm: activate credential: policy secret: %w", err)
	}
	if pol := ek.pub.AuthPolicy.Buffer; !bytes.Equal(pol, policyA(alg)) {
		// High-range EKs: PolicyOR(PolicyA, PolicyC).
		if _, err := (tpm2.PolicyOr{
			PolicySession: sess.Handle(),
			PHashList:     tpm2.TPMLDigest{Digests: []tpm2.TPM2BDigest{{Buffer: policyA(alg)}, {Buffer: policyC(alg)}}},
		}).Execute(t); err != nil {
			return nil, fmt.Errorf("tpm: activate credential: policy or: %w", err)
		}
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ekHandle, Name: ekName, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: cred.IDObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: cred.EncryptedSecret},
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// PCRSelection builds the SHA-256 selection of pcrs in PC Client format.
func PCRSelection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	u := make([]uint, 0, len(pcrs))
	for _, p := range pcrs {
		if p < 0 || p > 23 {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("tpm: PCR %d out of range 0-23", p)
		}
		u = append(u, uint(p))
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}, nil
}

// Quote signs the SHA-256 values of pcrs and qualifyingData with the AK.
// PCRs are read after quoting; if one changed in between, the digest no
// longer matches and the quote is taken again.
func (t *TPM) Quote(ak *AK, qualifyingData []byte, pcrs []int) (*Quote, error) {
	if len(pcrs) == 0 {
		return nil, errors.New("tpm: quote: empty PCR selection")
	}
	sel, err := PCRSelection(pcrs)
	if err != nil {
		return nil, err
	}
	for range 3 {
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      sel,
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("tpm: quote: %w", err)
		}
		values, err := t.ReadPCRs(pcrs)
		if err != nil {
			return nil, err
		}
		att, err := rsp.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("tpm: quote: %w", err)
		}
		qi, err := att.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("tpm: quote: %w", err)
		}
		if bytes.Equal(qi.PCRDigest.Buffer, pcrDigest(pcrs, values)) {
			return &Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature), PCRs: values}, nil
		}
	}
	return nil, errors.New("tpm: quote: PCRs kept changing while quoting")
}

// ReadPCRs reads the SHA-256 bank values of pcrs.
func (t *TPM) ReadPCRs(pcrs []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(pcrs))
	// PCR_Read returns at most 8 digests per call.
	for _, p := range pcrs {
		if _, ok := out[p]; ok {
			continue
		}
		sel, err := PCRSelection([]int{p})
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("tpm: read PCR %d: %w", p, err)
		}
		if len(rsp.PCRValues.Digests) != 1 {
			return nil, fmt.Errorf("tpm: read PCR %d: SHA-256 bank not active", p)
		}
		out[p] = rsp.PCRValues.Digests[0].Buffer
	}
	return out, nil
}

// Extend extends PCR pcr of the SHA-256 bank with digest; simulators use it
// to play a boot.
func (t *TPM) Extend(pcr int, digest []byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest}}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("tpm: extend PCR %d: %w", pcr, err)
	}
	return nil
}

// pcrDigest is the quote digest: SHA-256 over the values in selection
// (ascending index) order.
func pcrDigest(pcrs []int, values map[int][]byte) []byte {
	idx := slices.Clone(pcrs)
	slices.Sort(idx)
	idx = slices.Compact(idx)
	h := sha256.New()
	for _, p := range idx {
		h.Write(values[p])
	}
	return h.Sum(nil)
}

// DefaultEventLogPath is where Linux exposes the firmware's TCG event log.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// ReadEventLog reads the TCG event log at path; a missing log is not an
// error (VMs and simulators often have none) and yields nil.
func ReadEventLog(path string) ([]byte, error) {
	if path == "" {
		path = DefaultEventLogPath
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: read event log: %w", err)
	}
	return b, nil
}
