// Package keymanagertest is the conformance suite every agent KeyManager
// must pass (memory, disk and external plugins). Keys are checked with real
// signatures verified by the standard library, so an implementation cannot
// pass by returning well-formed but unusable keys.
package keymanagertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
)

// Run runs the suite. newKM must return a fresh, empty key manager each time
// it is called; it may register cleanups on the t it is given.
func Run(t *testing.T, newKM func(t *testing.T) keymanager.KeyManager) {
	t.Helper()
	t.Run("Contract", func(t *testing.T) { testContract(t, newKM(t)) })
	t.Run("ReplaceAgentKey", func(t *testing.T) { testReplace(t, newKM(t)) })
}

func testContract(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	if _, err := km.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("AgentKey on empty manager: got %v, want ErrNoAgentKey", err)
	}
	k1, err := km.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := km.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := k1.Public().(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("generated key is %T, want ECDSA P-256", k1.Public())
	}
	if ec.Equal(k2.Public()) {
		t.Fatal("two generated keys are equal")
	}
	checkSigns(t, "generated key", k1)
	checkSigns(t, "generated key", k2)
	if _, err := km.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatal("GenerateKey must not set the agent key")
	}
	if err := km.SetAgentKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	got, err := km.AgentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !ec.Equal(got.Public()) {
		t.Fatal("AgentKey returned a different key")
	}
	checkSigns(t, "agent key", got)
	if err := km.SetAgentKey(ctx, nil); err == nil {
		t.Fatal("SetAgentKey(nil) succeeded")
	}
}

// testReplace is what renewal does: a new key becomes the agent key.
func testReplace(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	for i := range 3 {
		k, err := km.GenerateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := km.SetAgentKey(ctx, k); err != nil {
			t.Fatalf("round %d: SetAgentKey: %v", i, err)
		}
		got, err := km.AgentKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !k.Public().(*ecdsa.PublicKey).Equal(got.Public()) {
			t.Fatalf("round %d: AgentKey is not the key just set", i)
		}
		checkSigns(t, "agent key", got)
	}
}

func checkSigns(t *testing.T, what string, key crypto.Signer) {
	t.Helper()
	digest := sha256.Sum256([]byte("keymanagertest"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("%s: sign: %v", what, err)
	}
	if !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("%s: signature does not verify", what)
	}
}
