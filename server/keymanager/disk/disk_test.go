package disk_test

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/server/keymanager/keymanagertest"
)

func TestConformance(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		km, err := disk.New(filepath.Join(t.TempDir(), "keys.json"))
		if err != nil {
			t.Fatal(err)
		}
		return km
	})
}

func equal(a, b crypto.PublicKey) bool {
	return a.(interface{ Equal(crypto.PublicKey) bool }).Equal(b)
}

func TestPersistence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "keys.json")
	km, err := disk.New(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]crypto.PublicKey{}
	for _, kt := range keymanager.KeyTypes {
		k, err := km.GenerateKey(ctx, kt.String(), kt)
		if err != nil {
			t.Fatal(err)
		}
		want[k.ID()] = k.Public()
	}
	// Replace one: only the new key must survive.
	k, err := km.GenerateKey(ctx, keymanager.ECP256.String(), keymanager.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	want[k.ID()] = k.Public()

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", st.Mode().Perm())
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the key file (temporary files left behind?)", len(entries))
	}

	reopened, err := disk.New(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	keys, err := reopened.GetKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(want) {
		t.Fatalf("reopened manager holds %d keys, want %d", len(keys), len(want))
	}
	for _, k := range keys {
		pub, ok := want[k.ID()]
		if !ok || !equal(pub, k.Public()) {
			t.Errorf("key %q changed across reopen", k.ID())
		}
		if k.Type().String() != k.ID() {
			t.Errorf("key %q has type %s after reopen", k.ID(), k.Type())
		}
		if err := keymanagertest.SignAndVerify(k); err != nil {
			t.Error(err)
		}
	}
}

func TestNewRejectsBadFiles(t *testing.T) {
	ctx := context.Background()
	good := filepath.Join(t.TempDir(), "keys.json")
	km, err := disk.New(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.GenerateKey(ctx, "a", keymanager.ECP256); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string][]map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	mutate := func(change func(k map[string]any)) string {
		k := map[string]any{}
		for n, v := range f["keys"][0] {
			k[n] = v
		}
		change(k)
		b, _ := json.Marshal(k)
		return string(b)
	}
	one := func(k string) string { return `{"keys":[` + k + `]}` }
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{"not json", "{", "parse"},
		{"unknown type", one(mutate(func(k map[string]any) { k["type"] = "dsa-1024" })), "unknown key type"},
		{"type mismatch", one(mutate(func(k map[string]any) { k["type"] = "ec-p384" })), "recorded as ec-p384"},
		{"bad key bytes", one(mutate(func(k map[string]any) { k["private_key"] = "AAAA" })), "key \"a\""},
		{"empty id", one(mutate(func(k map[string]any) { k["id"] = "" })), "empty key id"},
		{"duplicate id", `{"keys":[` + mutate(func(map[string]any) {}) + `,` + mutate(func(map[string]any) {}) + `]}`, "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := disk.New(p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFailedWriteKeepsPreviousKey(t *testing.T) {
	ctx := context.Background()
	sub := filepath.Join(t.TempDir(), "sub")
	km, err := disk.New(filepath.Join(sub, "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	prev, err := km.GenerateKey(ctx, "a", keymanager.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	// Turn the directory into a file, so every further write fails.
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sub, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := km.GenerateKey(ctx, "a", keymanager.ECP256); err == nil {
		t.Fatal("GenerateKey succeeded although the key file cannot be written")
	}
	got, err := km.GetKey(ctx, "a")
	if err != nil || !equal(got.Public(), prev.Public()) {
		t.Fatalf("failed replace did not keep the persisted key: %v", err)
	}
	if _, err := km.GenerateKey(ctx, "b", keymanager.ECP256); err == nil {
		t.Fatal("GenerateKey succeeded although the key file cannot be written")
	}
	if _, err := km.GetKey(ctx, "b"); !errors.Is(err, keymanager.ErrNotFound) {
		t.Fatalf("a key that was never persisted is served: %v", err)
	}
}
