package swtpm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ekCertIndexP256 is the low-range NV index of the ECC NIST P-256 EK
// certificate (TCG EK Credential Profile), the first one clients read.
const ekCertIndexP256 = 0x01c0000a

// ProvisionP256EK gives instance i the ECC NIST P-256 EK that hardware TPMs
// ship (swtpm_setup makes a P-384 one): the EK of the TCG default template
// L-2, certified by the fleet's local CA with swtpm_cert, as swtpm_setup
// certifies its own EKs, and stored at 0x01c0000a with the attributes a
// platform gives EK certificates.
func (f *Fleet) ProvisionP256EK(i *Instance) error {
	conn, err := i.dial()
	if err != nil {
		return fmt.Errorf("swtpm: P-256 EK: %w", err)
	}
	defer conn.Close()
	tp := transport.FromReadWriter(conn)
	x, y, err := createP256EK(tp)
	if err != nil {
		return fmt.Errorf("swtpm: P-256 EK: %w", err)
	}
	der, err := f.certifyP256EK(i, x, y)
	if err != nil {
		return fmt.Errorf("swtpm: P-256 EK: %w", err)
	}
	if err := writeNVCert(tp, ekCertIndexP256, der); err != nil {
		return fmt.Errorf("swtpm: P-256 EK: %w", err)
	}
	return nil
}

// createP256EK creates the primary and returns its point, flushing it: the
// EK is derived from the endorsement seed, so clients recreate the same key.
func createP256EK(tp transport.TPM) (x, y []byte, err error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCEKTemplate),
	}.Execute(tp)
	if err != nil {
		return nil, nil, fmt.Errorf("create EK: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp) //nolint:errcheck // best effort
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, nil, err
	}
	ecc, err := pub.Unique.ECC()
	if err != nil {
		return nil, nil, err
	}
	return ecc.X.Buffer, ecc.Y.Buffer, nil
}

// certifyP256EK has swtpm_cert issue the EK certificate under the local CA.
func (f *Fleet) certifyP256EK(i *Instance, x, y []byte) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, err
	}
	out := filepath.Join(i.StateDir, "ek-p256.cert")
	caDir := filepath.Dir(f.IssuerCA)
	cmd := exec.Command("swtpm_cert", "--tpm2", "--type", "ek",
		"--ecc-x", hex.EncodeToString(x), "--ecc-y", hex.EncodeToString(y), "--ecc-curveid", "secp256r1",
		"--signkey", filepath.Join(caDir, "signkey.pem"), "--issuercert", f.IssuerCA,
		"--out-cert", out, "--serial", serial.String(), "--days", "3650",
		"--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm", "--tpm-version", "id:20191023",
		"--tpm-spec-family", "2.0", "--tpm-spec-level", "0", "--tpm-spec-revision", "164")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("swtpm_cert: %w: %s", err, b)
	}
	return os.ReadFile(out)
}

// writeNVCert defines index idx under the platform hierarchy (replacing
// what is there) and writes der into it.
func writeNVCert(tp transport.TPM, idx uint32, der []byte) error {
	platform := tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)}
	if pub, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(idx)}).Execute(tp); err == nil {
		if _, err := (tpm2.NVUndefineSpace{AuthHandle: platform, NVIndex: tpm2.NamedHandle{Handle: tpm2.TPMHandle(idx), Name: pub.NVName}}).Execute(tp); err != nil {
			return fmt.Errorf("undefine %#x: %w", idx, err)
		}
	}
	if len(der) > 0xffff {
		return errors.New("certificate too large for an NV index")
	}
	pub := tpm2.TPMSNVPublic{
		NVIndex: tpm2.TPMHandle(idx),
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			PPWrite: true, PPRead: true, OwnerRead: true, AuthRead: true,
			NoDA: true, PlatformCreate: true, NT: tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(len(der)),
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: platform, PublicInfo: tpm2.New2B(pub)}).Execute(tp); err != nil {
		return fmt.Errorf("define %#x: %w", idx, err)
	}
	rp, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(idx)}).Execute(tp)
	if err != nil {
		return err
	}
	const chunk = 512 // below every TPM's MAX_NV_BUFFER_SIZE
	for off := 0; off < len(der); off += chunk {
		end := min(off+chunk, len(der))
		if _, err := (tpm2.NVWrite{
			AuthHandle: platform,
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(idx), Name: rp.NVName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: der[off:end]},
			Offset:     uint16(off),
		}).Execute(tp); err != nil {
			return fmt.Errorf("write %#x at %d: %w", idx, off, err)
		}
	}
	return nil
}
