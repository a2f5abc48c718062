// Package tpmdevid attests an agent's node with a DevID (an IEEE 802.1AR
// device identity whose key lives in the TPM), compatible with SPIRE's
// "tpm_devid" plugin: same configuration keys, same files, same messages,
// so a node enrolled for SPIRE attests to our server, and to SPIRE's,
// without re-enrolment.
//
// The agent sends the DevID certificate chain and public area, its EK
// certificate and public area, and a fresh attestation key's certification
// of the DevID key; it answers the server's challenge by signing the nonce
// with the DevID key and activating the credential the server encrypted
// to its EK for that AK.
package tpmdevid

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// Type is the attestation type.
const Type = "tpm_devid"

// deviceDir is where an empty tpm_device_path looks for a TPM.
var deviceDir = "/dev"

// PluginData is the plugin_data block of NodeAttestor "tpm_devid", with
// SPIRE's keys.
type PluginData struct {
	// DevIDCertPath is the PEM DevID certificate, then its intermediates.
	DevIDCertPath string `hcl:"devid_cert_path"`
	// DevIDPrivPath and DevIDPubPath are the key's blobs as the TPM
	// created them (TPM2B_PRIVATE contents and TPMT_PUBLIC).
	DevIDPrivPath string `hcl:"devid_priv_path"`
	DevIDPubPath  string `hcl:"devid_pub_path"`

	DevIDPassword                string `hcl:"devid_password"`
	OwnerHierarchyPassword       string `hcl:"owner_hierarchy_password"`
	EndorsementHierarchyPassword string `hcl:"endorsement_hierarchy_password"`

	// TPMDevicePath is the TPM; empty means the one /dev/tpmrmN (or
	// /dev/tpmN). It also takes tcp://host:port and unix:///path.
	TPMDevicePath string `hcl:"tpm_device_path"`
}

// Attestor produces tpm_devid evidence.
type Attestor struct {
	path     string
	chain    [][]byte
	pub      []byte
	priv     []byte
	password tpm.DevIDPasswords

	mu sync.Mutex
	ak *tpm.DevIDAK // the AK of the attestation under way
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New checks d and reads the DevID files.
func New(d PluginData) (*Attestor, error) {
	var missing []error
	for _, kv := range [][2]string{{"devid_cert_path", d.DevIDCertPath}, {"devid_priv_path", d.DevIDPrivPath}, {"devid_pub_path", d.DevIDPubPath}} {
		if kv[1] == "" {
			missing = append(missing, fmt.Errorf("tpm_devid: %s is required", kv[0]))
		}
	}
	if err := errors.Join(missing...); err != nil {
		return nil, err
	}
	a := &Attestor{path: d.TPMDevicePath, password: tpm.DevIDPasswords{
		EndorsementHierarchy: d.EndorsementHierarchyPassword,
		OwnerHierarchy:       d.OwnerHierarchyPassword,
		DevIDKey:             d.DevIDPassword,
	}}
	if a.path == "" {
		p, err := tpm.DetectDevice(deviceDir)
		if err != nil {
			return nil, fmt.Errorf("tpm_devid: tpm_device_path: %w", err)
		}
		a.path = p
	}
	certs, err := os.ReadFile(d.DevIDCertPath)
	if err != nil {
		return nil, fmt.Errorf("tpm_devid: devid_cert_path: %w", err)
	}
	for {
		var blk *pem.Block
		if blk, certs = pem.Decode(certs); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			a.chain = append(a.chain, blk.Bytes)
		}
	}
	if len(a.chain) == 0 {
		return nil, fmt.Errorf("tpm_devid: devid_cert_path %s holds no PEM certificate", d.DevIDCertPath)
	}
	if a.priv, err = readBlob(d.DevIDPrivPath); err != nil {
		return nil, fmt.Errorf("tpm_devid: devid_priv_path: %w", err)
	}
	if a.pub, err = readBlob(d.DevIDPubPath); err != nil {
		return nil, fmt.Errorf("tpm_devid: devid_pub_path: %w", err)
	}
	return a, nil
}

func readBlob(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || len(b) > tpm.MaxDevIDBlob {
		return nil, fmt.Errorf("%s: %d bytes is not a TPM key blob", path, len(b))
	}
	return b, nil
}

// Type returns "tpm_devid".
func (*Attestor) Type() string { return Type }

// TPMPath is the TPM the attestor uses.
func (a *Attestor) TPMPath() string { return a.path }

// devID opens the TPM and loads the DevID key; release closes it.
func (a *Attestor) devID() (*tpm.DevID, func(), error) {
	t, release, err := tpm.Shared(a.path)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm_devid: %w", err)
	}
	d, err := t.LoadDevID(a.pub, a.priv, a.password)
	if err != nil {
		release()
		return nil, nil, err
	}
	return d, release, nil
}

// AttestationData creates the attestation key, has it certify the DevID
// key and returns SPIRE's AttestationRequest. The evidence binds no CSR,
// as SPIRE's does not.
func (a *Attestor) AttestationData(context.Context, []byte) ([]byte, error) {
	d, release, err := a.devID()
	if err != nil {
		return nil, err
	}
	defer release()
	ekCert, ekPub, err := d.EK()
	if err != nil {
		return nil, err
	}
	ak, err := d.NewAK()
	if err != nil {
		return nil, err
	}
	attest, sig, err := d.Certify(ak)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.ak = ak
	a.mu.Unlock()
	return json.Marshal(tpm.DevIDAttestation{
		DevIDCert: a.chain, DevIDPub: a.pub,
		EKCert: ekCert, EKPub: ekPub,
		AKPub:          ak.Public(),
		CertifiedDevID: attest, CertificationSignature: sig,
	})
}

// Respond signs the nonce with the DevID key and activates the
// credential with the AK of AttestationData.
func (a *Attestor) Respond(_ context.Context, challenge []byte) ([]byte, error) {
	c, err := tpm.ParseDevIDChallenge(challenge)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	ak := a.ak
	a.mu.Unlock()
	if ak == nil {
		return nil, errors.New("tpm_devid: challenge before attestation data")
	}
	d, release, err := a.devID()
	if err != nil {
		return nil, err
	}
	defer release()
	sig, err := d.Sign(c.DevID)
	if err != nil {
		return nil, err
	}
	secret, err := d.ActivateCredential(ak, c.CredActivation)
	if err != nil {
		return nil, err
	}
	return json.Marshal(tpm.DevIDChallengeResponse{DevID: sig, CredActivation: secret})
}
