package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

func open(t *testing.T, path string) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hs, err := tp.Handles()
		if err != nil || len(hs) != 0 {
			t.Errorf("transient handles left loaded: %v %v", hs, err)
		}
		tp.Close()
	})
	return tp
}

// TestFullFlow runs the client and verifier halves against swtpm for the
// RSA EK, swtpm's own P-384 EK and the P-256 EK hardware TPMs ship.
func TestFullFlow(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	if err := fleet.ProvisionP256EK(fleet.TPMs[1]); err != nil {
		t.Fatal(err)
	}
	roots, err := tpm.LoadEKRoots(fleet.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, alg string
		tpm       int
		curve     elliptic.Curve // nil for RSA
	}{
		{"rsa", "rsa", 0, nil},
		{"ecc-p384", "ecc", 0, elliptic.P384()},
		{"ecc-p256", "ecc", 1, elliptic.P256()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tp := open(t, fleet.TPMs[c.tpm].Path)
			ek, err := tp.EK(tpm.WithEKAlgorithm(c.alg))
			if err != nil {
				t.Fatal(err)
			}
			ekc, err := tpm.VerifyEKCertificate(ek.Certificate, roots, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := ekc.PublicKey.(*ecdsa.PublicKey); (c.curve == nil) != !ok || ok && k.Curve != c.curve {
				t.Fatalf("EK key %T, want curve %v", ekc.PublicKey, c.curve)
			}
			if ekc.Manufacturer != "id:00001014" || ekc.Model != "swtpm" {
				t.Errorf("manufacturer/model = %q/%q", ekc.Manufacturer, ekc.Model)
			}
			ak, err := tp.NewAK()
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close()
			akPub, err := tpm.VerifyAK(ak.Params())
			if err != nil {
				t.Fatal(err)
			}
			secret, cred, err := tpm.MakeCredential(ekc.PublicKey, akPub.Name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.ActivateCredential(ak, ek, *cred)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatal("activated secret differs")
			}
			qd := sha256.Sum256([]byte("nonce"))
			pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7}
			q, err := tp.Quote(ak, qd[:], pcrs)
			if err != nil {
				t.Fatal(err)
			}
			info, err := tpm.VerifyQuote(akPub, q, qd[:], pcrs)
			if err != nil {
				t.Fatal(err)
			}
			if len(info.PCRs) != 8 || info.ResetCount == 0 && info.Clock == 0 {
				t.Errorf("quote info = %+v", info)
			}
		})
	}
}

// TestSecureBootEnabled: a boot with Secure Boot on (PK, KEK, db and dbx
// measured, and the db certificate that verified the loader) replays and
// says enabled; the same log without the authority event is not believed.
func TestSecureBootEnabled(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	signer, err := swtpm.BootSigner()
	if err != nil {
		t.Fatal(err)
	}
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for i, tc := range []struct {
		name   string
		events []swtpm.Event
		want   *bool
	}{
		{"enabled", swtpm.Boot(true, signer), ptr(true)},
		// go-attestation refuses "enabled, but no key was used".
		{"enabled without an authority", swtpm.Boot(true), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := open(t, fleet.TPMs[i].Path)
			log, err := swtpm.MeasureBoot(tp, tc.events)
			if err != nil {
				t.Fatal(err)
			}
			values, err := tp.ReadPCRs(pcrs)
			if err != nil {
				t.Fatal(err)
			}
			st, err := tpm.ReplayEventLog(log, values)
			if err != nil {
				t.Fatal(err)
			}
			if (st.SecureBoot == nil) != (tc.want == nil) || (st.SecureBoot != nil && *st.SecureBoot != *tc.want) {
				t.Fatalf("secure boot = %v, want %v", deref(st.SecureBoot), deref(tc.want))
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func deref(b *bool) string {
	if b == nil {
		return "unknown"
	}
	return strconv.FormatBool(*b)
}

// TestEventLogReplay plays a boot into the TPM and replays its log
// against a verified quote.
func TestEventLogReplay(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	tp := open(t, fleet.TPMs[0].Path)
	log, err := swtpm.MeasureBoot(tp, swtpm.Boot(false))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	akPub, err := tpm.VerifyAK(ak.Params())
	if err != nil {
		t.Fatal(err)
	}
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7}
	q, err := tp.Quote(ak, []byte("n"), pcrs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := tpm.VerifyQuote(akPub, q, []byte("n"), pcrs)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tpm.ReplayEventLog(log, info.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	if st.SecureBoot == nil || *st.SecureBoot {
		t.Errorf("secure boot = %v, want disabled", st.SecureBoot)
	}
	// One more measurement the log does not have.
	if err := tp.Extend(7, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	q, err = tp.Quote(ak, []byte("n"), pcrs)
	if err != nil {
		t.Fatal(err)
	}
	info, err = tpm.VerifyQuote(akPub, q, []byte("n"), pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.ReplayEventLog(log, info.PCRs); err == nil {
		t.Fatal("a log missing a measurement replayed")
	}
	_ = slices.Clone(pcrs)
}
