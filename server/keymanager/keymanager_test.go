package keymanager_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

func TestParseKeyType(t *testing.T) {
	for name, want := range map[string]keymanager.KeyType{
		"ec-p256": keymanager.ECP256, "ec-p384": keymanager.ECP384,
		"rsa-2048": keymanager.RSA2048, "rsa-4096": keymanager.RSA4096,
	} {
		got, err := keymanager.ParseKeyType(name)
		if err != nil || got != want || got.String() != name {
			t.Errorf("ParseKeyType(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "EC-P256", "ec-p521", "rsa-1024", "ed25519"} {
		if _, err := keymanager.ParseKeyType(bad); err == nil {
			t.Errorf("ParseKeyType(%q) succeeded", bad)
		}
	}
	var zero keymanager.KeyType
	if zero != keymanager.ECP256 {
		t.Error("zero KeyType is not the ec-p256 default")
	}
}

func TestKeyTypeOf(t *testing.T) {
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // only its size is tested
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, pub := range map[string]any{"p521": &p521.PublicKey, "rsa1024": &rsa1024.PublicKey, "ed25519": edPub} {
		if _, err := keymanager.KeyTypeOf(pub); err == nil {
			t.Errorf("KeyTypeOf(%s) succeeded", name)
		}
	}
	for _, kt := range []keymanager.KeyType{keymanager.ECP256, keymanager.ECP384, keymanager.RSA2048} {
		s, err := keymanager.GenerateSigner(kt)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := keymanager.KeyTypeOf(s.Public()); err != nil || got != kt {
			t.Errorf("KeyTypeOf(%s key) = %v, %v", kt, got, err)
		}
	}
}
