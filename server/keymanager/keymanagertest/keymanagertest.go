// Package keymanagertest is the conformance suite every KeyManager must pass
// (memory, disk, and the PKCS#11 one). It exercises real signatures with
// every key type and checks them with the standard library's verifiers, so an
// implementation cannot pass by returning well-formed but wrong keys.
package keymanagertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// Run runs the suite. newKM must return a fresh, empty key manager each time
// it is called; it may register cleanups on the t it is given.
func Run(t *testing.T, newKM func(t *testing.T) keymanager.KeyManager) {
	t.Helper()
	t.Run("Empty", func(t *testing.T) { testEmpty(t, newKM(t)) })
	t.Run("RejectsBadInput", func(t *testing.T) { testBadInput(t, newKM(t)) })
	t.Run("SignVerify", func(t *testing.T) { testSignVerify(t, newKM(t)) })
	t.Run("Replace", func(t *testing.T) { testReplace(t, newKM(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newKM(t)) })
}

func testEmpty(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	keys, err := km.GetKeys(ctx)
	if err != nil {
		t.Fatalf("GetKeys: %v", err)
	}
	if len(keys) != 0 {
		t.Fatalf("fresh key manager holds %d keys, want 0", len(keys))
	}
	_, err = km.GetKey(ctx, "missing")
	if !errors.Is(err, keymanager.ErrNotFound) {
		t.Fatalf("GetKey(missing) = %v, want ErrNotFound", err)
	}
}

func testBadInput(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	if _, err := km.GenerateKey(ctx, "", keymanager.ECP256); err == nil {
		t.Error("GenerateKey with empty id succeeded")
	}
	if _, err := km.GenerateKey(ctx, "bad-type", keymanager.KeyType(99)); err == nil {
		t.Error("GenerateKey with unknown key type succeeded")
	}
	if _, err := km.GetKey(ctx, "bad-type"); !errors.Is(err, keymanager.ErrNotFound) {
		t.Errorf("failed GenerateKey left a key behind: GetKey = %v", err)
	}
}

func testSignVerify(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	for _, kt := range keymanager.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			id := "key-" + kt.String()
			k, err := km.GenerateKey(ctx, id, kt)
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if k.ID() != id || k.Type() != kt {
				t.Fatalf("key = (%q, %s), want (%q, %s)", k.ID(), k.Type(), id, kt)
			}
			got, err := keymanager.KeyTypeOf(k.Public())
			if err != nil || got != kt {
				t.Fatalf("public key type = %v, %v; want %s", got, err, kt)
			}
			if err := SignAndVerify(k); err != nil {
				t.Fatal(err)
			}
			again, err := km.GetKey(ctx, id)
			if err != nil {
				t.Fatalf("GetKey: %v", err)
			}
			if !publicEqual(again.Public(), k.Public()) || again.Type() != kt || again.ID() != id {
				t.Fatal("GetKey returned a different key than GenerateKey")
			}
			if err := SignAndVerify(again); err != nil {
				t.Fatalf("key from GetKey: %v", err)
			}
		})
	}
	keys, err := km.GetKeys(ctx)
	if err != nil {
		t.Fatalf("GetKeys: %v", err)
	}
	if len(keys) != len(keymanager.KeyTypes) {
		t.Fatalf("GetKeys returned %d keys, want %d", len(keys), len(keymanager.KeyTypes))
	}
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k.ID()] = true
		if err := SignAndVerify(k); err != nil {
			t.Errorf("key %q from GetKeys: %v", k.ID(), err)
		}
	}
	for _, kt := range keymanager.KeyTypes {
		if !seen["key-"+kt.String()] {
			t.Errorf("GetKeys misses key-%s", kt)
		}
	}
}

func testReplace(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	first, err := km.GenerateKey(ctx, "slot", keymanager.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	other, err := km.GenerateKey(ctx, "other", keymanager.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	second, err := km.GenerateKey(ctx, "slot", keymanager.ECP384)
	if err != nil {
		t.Fatalf("GenerateKey (replace): %v", err)
	}
	if publicEqual(first.Public(), second.Public()) {
		t.Fatal("replacing a key returned the same public key")
	}
	got, err := km.GetKey(ctx, "slot")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if !publicEqual(got.Public(), second.Public()) || got.Type() != keymanager.ECP384 {
		t.Fatal("GetKey after replace does not return the new key")
	}
	if err := SignAndVerify(got); err != nil {
		t.Fatal(err)
	}
	keys, err := km.GetKeys(ctx)
	if err != nil {
		t.Fatalf("GetKeys: %v", err)
	}
	if len(keys) != 2 {
		t.Fatalf("GetKeys after replace returned %d keys, want 2", len(keys))
	}
	o, err := km.GetKey(ctx, "other")
	if err != nil || !publicEqual(o.Public(), other.Public()) {
		t.Fatalf("replacing one key disturbed another: %v", err)
	}
}

func testConcurrent(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for i := range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("concurrent-%d", i)
			k, err := km.GenerateKey(ctx, id, keymanager.ECP256)
			if err != nil {
				errs <- err
				return
			}
			for range 5 {
				if err := SignAndVerify(k); err != nil {
					errs <- err
					return
				}
			}
			// Replace while others read.
			if _, err := km.GenerateKey(ctx, id, keymanager.ECP256); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			for range 5 {
				if _, err := km.GetKeys(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	keys, err := km.GetKeys(ctx)
	if err != nil {
		t.Fatalf("GetKeys: %v", err)
	}
	if len(keys) != workers {
		t.Fatalf("GetKeys returned %d keys, want %d", len(keys), workers)
	}
	for _, k := range keys {
		if err := SignAndVerify(k); err != nil {
			t.Errorf("key %q: %v", k.ID(), err)
		}
	}
}

// SignAndVerify signs a digest with k the way the CA does (ECDSA ASN.1,
// RSA PKCS #1 v1.5) and verifies the signature with k's public key. It also
// checks that a signature over a different digest fails, so a signer that
// returns garbage or a fixed value cannot pass.
func SignAndVerify(k keymanager.Key) error {
	msg := []byte("keymanagertest " + k.ID())
	var digest []byte
	var h crypto.Hash
	if k.Type() == keymanager.ECP384 {
		d := sha512.Sum384(msg)
		digest, h = d[:], crypto.SHA384
	} else {
		d := sha256.Sum256(msg)
		digest, h = d[:], crypto.SHA256
	}
	sig, err := k.Sign(rand.Reader, digest, h)
	if err != nil {
		return fmt.Errorf("key %q: sign: %w", k.ID(), err)
	}
	other := append([]byte(nil), digest...)
	other[0] ^= 0xff
	switch pub := k.Public().(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			return fmt.Errorf("key %q: ECDSA signature does not verify", k.ID())
		}
		if ecdsa.VerifyASN1(pub, other, sig) {
			return fmt.Errorf("key %q: ECDSA signature verifies for another digest", k.ID())
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
			return fmt.Errorf("key %q: RSA signature does not verify: %w", k.ID(), err)
		}
		if rsa.VerifyPKCS1v15(pub, h, other, sig) == nil {
			return fmt.Errorf("key %q: RSA signature verifies for another digest", k.ID())
		}
	default:
		return fmt.Errorf("key %q: unexpected public key type %T", k.ID(), pub)
	}
	return nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
