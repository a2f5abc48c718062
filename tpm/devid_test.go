package tpm_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// TestDevIDRoundTrip runs the tpm_devid exchange on the ground floor, for
// both key types, and on a TPM whose owner and endorsement hierarchies
// have passwords (configured as SPIRE's keys say), and checks that no object
// stays loaded in the TPM afterwards: a swtpm has three slots.
func TestDevIDRoundTrip(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	ca, err := testpki.NewRoot("devid")
	if err != nil {
		t.Fatal(err)
	}
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, keyType string
		tpm           int
		pw            tpm.DevIDPasswords
	}{
		{"rsa", "rsa", 0, tpm.DevIDPasswords{DevIDKey: "pw"}},
		{"ecc", "ecc", 0, tpm.DevIDPasswords{DevIDKey: "pw"}},
		{"HierarchyPasswords", "rsa", 1, tpm.DevIDPasswords{DevIDKey: "pw", OwnerHierarchy: "own", EndorsementHierarchy: "endorse"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := fleet.TPMs[tc.tpm]
			d, err := fleet.ProvisionDevID(inst, swtpm.DevIDOptions{CA: ca, KeyType: tc.keyType, Password: "pw", Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			tp, err := tpm.Open(inst.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer tp.Close()
			if tc.pw.OwnerHierarchy != "" {
				for h, pw := range map[tpm2.TPMHandle]string{tpm2.TPMRHOwner: tc.pw.OwnerHierarchy, tpm2.TPMRHEndorsement: tc.pw.EndorsementHierarchy} {
					if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: tpm2.AuthHandle{Handle: h, Auth: tpm2.PasswordAuth(nil)},
						NewAuth: tpm2.TPM2BAuth{Buffer: []byte(pw)}}).Execute(tp); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := tp.LoadDevID(d.Public, d.Private, tpm.DevIDPasswords{DevIDKey: "pw"}); err == nil {
					t.Fatal("loaded without the owner password")
				}
			}
			wrong := tc.pw
			wrong.DevIDKey = "wrong"
			if _, err := tp.LoadDevID(d.Public, d.Private, wrong); err != nil {
				t.Fatalf("loading needs no key password, only using it: %v", err)
			}
			dev, err := tp.LoadDevID(d.Public, d.Private, tc.pw)
			if err != nil {
				t.Fatal(err)
			}
			ekCert, ekPub, err := dev.EK()
			if err != nil {
				t.Fatal(err)
			}
			ak, err := dev.NewAK()
			if err != nil {
				t.Fatal(err)
			}
			attest, sig, err := dev.Certify(ak)
			if err != nil {
				t.Fatal(err)
			}
			req := &tpm.DevIDAttestation{DevIDCert: [][]byte{d.Cert.Raw}, DevIDPub: d.Public, EKCert: ekCert, EKPub: ekPub,
				AKPub: ak.Public(), CertifiedDevID: attest, CertificationSignature: sig}
			ev, err := tpm.VerifyDevIDResidency(req, d.Cert.PublicKey, roots, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			pop, err := dev.Sign(ev.Challenge.DevID)
			if err != nil {
				t.Fatal(err)
			}
			secret, err := dev.ActivateCredential(ak, ev.Challenge.CredActivation)
			if err != nil {
				t.Fatal(err)
			}
			if err := tpm.VerifyDevIDResponse(ev, d.Cert, &tpm.DevIDChallengeResponse{DevID: pop, CredActivation: secret}); err != nil {
				t.Fatal(err)
			}
			if hs, err := tp.Handles(); err != nil || len(hs) != 0 {
				t.Fatalf("objects left loaded: %v %v", hs, err)
			}
			// A wrong DevID password fails at the first use of the key.
			bad, err := tp.LoadDevID(d.Public, d.Private, wrong)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bad.Sign(ev.Challenge.DevID); err == nil {
				t.Fatal("signed with a wrong DevID password")
			}
			if _, err := x509.ParseCertificate(ekCert); err != nil {
				t.Fatalf("EK certificate: %v", err)
			}
		})
	}
}
