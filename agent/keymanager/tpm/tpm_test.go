package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/keymanagertest"
	kmtpm "github.com/spiffe-hw/spire-hw/agent/keymanager/tpm"
	"github.com/spiffe-hw/spire-hw/sim/swtpm"
	"github.com/spiffe-hw/spire-hw/tpm"
)

func newKM(t *testing.T, path, dir string) *kmtpm.KeyManager {
	t.Helper()
	km, err := kmtpm.New(path, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	return km
}

func TestConformance(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		return newKM(t, fleet.TPMs[0].Path, t.TempDir())
	})
}

// TestBlobOnlyAndBoundToItsTPM: the directory holds the wrapped key and
// nothing a copy could sign with; a restart loads it from the same TPM; the
// same directory with another TPM has no usable key.
func TestBlobOnlyAndBoundToItsTPM(t *testing.T) {
	fleet := swtpm.StartT(t, 2)
	dir := t.TempDir()
	ctx := context.Background()
	km := newKM(t, fleet.TPMs[0].Path, dir)
	k, err := km.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(ctx, mustMemoryKey(t)); err == nil {
		t.Fatal("accepted a key outside the TPM")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != kmtpm.BlobFileName {
		t.Fatalf("directory holds %v, want only %s", entries, kmtpm.BlobFileName)
	}
	fi, _ := os.Stat(filepath.Join(dir, kmtpm.BlobFileName))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("blob mode %v", fi.Mode())
	}
	b, _ := os.ReadFile(filepath.Join(dir, kmtpm.BlobFileName))
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Fatal("blob holds a clear private key")
	}
	km.Close()

	again := newKM(t, fleet.TPMs[0].Path, dir)
	got, err := again.AgentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("restart loaded another key")
	}

	other := newKM(t, fleet.TPMs[1].Path, dir)
	if _, err := other.AgentKey(ctx); !errors.Is(err, keymanager.ErrAgentKeyNotHere) || !strings.Contains(err.Error(), "not made by this TPM") {
		t.Fatalf("another TPM used the copied key, or did not say that it is not its own: %v", err)
	}
	// A damaged blob is no proof of another TPM: a plain error.
	if err := os.WriteFile(filepath.Join(dir, kmtpm.BlobFileName), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newKM(t, fleet.TPMs[0].Path, dir).AgentKey(ctx); err == nil || errors.Is(err, keymanager.ErrAgentKeyNotHere) {
		t.Fatalf("damaged blob: err = %v, want an error other than ErrAgentKeyNotHere", err)
	}
}

// TestSharedWithAttestor: the key a manager generated is found on the
// connection the node attestor opens for the same path.
func TestSharedWithAttestor(t *testing.T) {
	fleet := swtpm.StartT(t, 1)
	km := newKM(t, fleet.TPMs[0].Path, t.TempDir())
	k, err := km.GenerateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tp, release, err := tpm.Shared(fleet.TPMs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, ok := tp.ResidentKeyFor(k.Public()); !ok {
		t.Fatal("the attestor's connection does not know the key manager's key")
	}
}

func mustMemoryKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := keymanager.GenerateECKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
