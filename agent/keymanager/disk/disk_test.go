package disk

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
)

func TestKeySurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	km, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := km.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	// A new instance over the same directory is a restarted agent.
	km2, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := km2.AgentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(got.Public()) {
		t.Fatal("restarted key manager returned a different key")
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d files, want 1", len(ents))
	}
}

func TestCorruptKeyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	km, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = km.AgentKey(context.Background())
	if err == nil || errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("corrupt key file: got %v, want a parse error", err)
	}
}

func TestNewRequiresDirectory(t *testing.T) {
	if _, err := New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}

// TestKeyFileIsPrivateWhateverTheUmask: the key directory the manager
// creates is 0700 and the key 0600 under any umask.
func TestKeyFileIsPrivateWhateverTheUmask(t *testing.T) {
	ctx := context.Background()
	for _, mask := range []int{0, 0o022, 0o277} {
		t.Run(fmt.Sprintf("umask %04o", mask), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			old := syscall.Umask(mask)
			defer syscall.Umask(old)
			km, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			key, err := km.GenerateKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := km.SetAgentKey(ctx, key); err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]fs.FileMode{dir: fs.ModeDir | 0o700, filepath.Join(dir, KeyFileName): 0o600} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != want {
					t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
				}
			}
		})
	}
}
