package tpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

// TestResidentKeySigns checks that a resident key signs what an SVID key
// signs (a CSR, a SHA-256 digest) and that its blob works again on a new
// connection to the same TPM but not on another TPM.
func TestResidentKeySigns(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	tp, err := tpm.Open(fleet.TPMs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tp.CreateResidentKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.CheckSignature(); err != nil {
		t.Fatalf("CSR signed by the TPM does not verify: %v", err)
	}
	digest := sha256.Sum256([]byte("handshake"))
	if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA384); err == nil {
		t.Fatal("signed with a hash other than the key's scheme")
	}
	blob, err := k.Blob()
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	if _, ok := tp.ResidentKeyFor(k.Public()); ok {
		t.Fatal("closed key still listed")
	}

	if hs, err := tp.Handles(); err != nil || len(hs) != 0 {
		t.Fatalf("transient handles left loaded: %v %v", hs, err)
	}
	tp.Close()
	again := open(t, fleet.TPMs[0].Path)
	k2, err := again.LoadResidentKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("loaded key has another public key")
	}
	if got, ok := again.ResidentKeyFor(k.Public()); !ok || got != k2 {
		t.Fatal("loaded key not found by its public key")
	}
	for range 3 { // the first use loads the blob, the next ones the saved context
		sig, err := k2.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatal("signature does not verify")
		}
	}

	other := open(t, fleet.TPMs[1].Path)
	if _, err := other.LoadResidentKey(blob); err == nil || !strings.Contains(err.Error(), "not made by this TPM") {
		t.Fatalf("another TPM loaded the blob: %v", err)
	}
	if _, err := other.LoadResidentKey([]byte(`{"version":2}`)); err == nil {
		t.Fatal("accepted a blob of an unknown version")
	}
}

// TestResidentKeyCertification runs TPM2_Certify and the verifier against
// the keys and AKs an attacker could substitute.
func TestResidentKeyCertification(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	a := open(t, fleet.TPMs[0].Path)
	b := open(t, fleet.TPMs[1].Path)
	akA, err := a.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	defer akA.Close()
	akAPub, err := tpm.VerifyAK(akA.Params())
	if err != nil {
		t.Fatal(err)
	}
	key, err := a.CreateResidentKey()
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	qd := tpm.AgentKeyQualifyingData([]byte("nonce"), der)

	c, err := a.Certify(akA, key, qd)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.VerifyResidentKey(akAPub, c, qd, key.Public()); err != nil {
		t.Fatalf("genuine certification refused: %v", err)
	}

	refuse := func(name string, c *tpm.Certification, qd []byte, want crypto.PublicKey, reason string) {
		t.Helper()
		err := tpm.VerifyResidentKey(akAPub, c, qd, want)
		if err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, reason)
		}
	}
	other, err := a.CreateResidentKey()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	refuse("CSR key not the certified one", c, qd, other.Public(), "not the CSR's key")
	refuse("other challenge", c, tpm.AgentKeyQualifyingData([]byte("other"), der), key.Public(), "another challenge")
	swapped := *c
	swapped.Public = other.PublicArea()
	refuse("public area swapped", &swapped, qd, other.Public(), "names another key")
	tampered := *c
	tampered.Attest = append([]byte(nil), c.Attest...)
	tampered.Attest[len(tampered.Attest)-1] ^= 1
	refuse("attestation tampered", &tampered, qd, key.Public(), "not certified by the attested AK")

	// TPM B's AK certifies TPM B's key: a true statement about another TPM.
	akB, err := b.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	defer akB.Close()
	keyB, err := b.CreateResidentKey()
	if err != nil {
		t.Fatal(err)
	}
	defer keyB.Close()
	derB, _ := x509.MarshalPKIXPublicKey(keyB.Public())
	qdB := tpm.AgentKeyQualifyingData([]byte("nonce"), derB)
	cB, err := b.Certify(akB, keyB, qdB)
	if err != nil {
		t.Fatal(err)
	}
	refuse("another TPM's AK", cB, qdB, keyB.Public(), "not certified by the attested AK")
	if _, err := a.Certify(akA, keyB, qdB); err == nil {
		t.Error("certified a key of another TPM connection")
	}

	for _, bad := range []struct {
		name   string
		edit   func(*tpm2.TPMAObject)
		reason string
	}{
		{"duplicable", func(a *tpm2.TPMAObject) { a.FixedTPM, a.FixedParent = false, false }, "can be duplicated"},
		// A TPM creates no key with only one of fixedTPM and fixedParent
		// clear under the SRK (TPM_RC_ATTRIBUTES), so duplicable is the one
		// non-resident shape it can certify.
		{"restricted", func(a *tpm2.TPMAObject) { a.Restricted = true }, "restricted key"},
	} {
		tmpl := tpm.ResidentKeyTemplate
		bad.edit(&tmpl.ObjectAttributes)
		k, err := a.CreateResidentKeyFrom(tmpl)
		if err != nil {
			t.Fatalf("%s: %v", bad.name, err)
		}
		kd, _ := x509.MarshalPKIXPublicKey(k.Public())
		q := tpm.AgentKeyQualifyingData([]byte("nonce"), kd)
		ck, err := a.Certify(akA, k, q)
		if err != nil {
			t.Fatalf("%s: %v", bad.name, err)
		}
		refuse(bad.name, ck, q, k.Public(), bad.reason)
		k.Close()
	}
}

// TestShared checks that Shared hands out one connection per path and
// closes it with the last release.
func TestShared(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	t1, rel1, err := tpm.Shared(fleet.TPMs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	t2, rel2, err := tpm.Shared(fleet.TPMs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if t1 != t2 {
		t.Fatal("two connections for one path")
	}
	if p, ok := strings.CutPrefix(fleet.TPMs[0].Path, "unix://"); ok {
		t3, rel, err := tpm.Shared(p)
		if err != nil {
			t.Fatal(err)
		}
		if t3 != t1 {
			t.Error("the socket's bare path opened a second connection")
		}
		rel()
	}
	rel1()
	rel1() // a second release of the same reference is a no-op
	if _, err := t2.Handles(); err != nil {
		t.Fatalf("connection closed while still shared: %v", err)
	}
	rel2()
	if _, err := t2.Handles(); err == nil {
		t.Fatal("connection still open after the last release")
	}
	t3, rel3, err := tpm.Shared(fleet.TPMs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	defer rel3()
	if t3 == t1 {
		t.Fatal("a closed connection was handed out again")
	}
}
