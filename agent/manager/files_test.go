package manager

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func selfSigned(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestStoreFilesArePrivateWhateverTheUmask: the cache (which holds SVID
// keys), the agent SVID and the bundle are 0600 in a 0700 directory under
// any umask, including one that would leave the cache unwritable.
func TestStoreFilesArePrivateWhateverTheUmask(t *testing.T) {
	cert := selfSigned(t)
	for _, mask := range []int{0, 0o022, 0o277} {
		t.Run(fmt.Sprintf("umask %04o", mask), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data", "agent")
			old := syscall.Umask(mask)
			defer syscall.Umask(old)
			s, err := openStore(dir, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.save(&state{}); err != nil {
				t.Fatal(err)
			}
			if err := s.saveAgentSVID([]*x509.Certificate{cert}, []*x509.Certificate{cert}); err != nil {
				t.Fatal(err)
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{filepath.Dir(dir), dir} {
				fi, err := os.Stat(d)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != fs.ModeDir|0o700 {
					t.Errorf("%s: mode %v, want drwx------", d, fi.Mode())
				}
			}
			for _, f := range []string{CacheFile, AgentSVIDFile, BundleFile} {
				fi, err := os.Stat(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != 0o600 {
					t.Errorf("%s: mode %v, want -rw-------", f, fi.Mode())
				}
			}
			// The next start opens the cache for writing again.
			s, err = openStore(dir, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if err := s.save(&state{}); err != nil {
				t.Fatalf("write after reopen: %v", err)
			}
			s.close()
		})
	}
}

// An existing cache that others can read keeps its mode (it is not the
// agent's to change) and is named in a warning.
func TestStoreWarnsOfASharedCache(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.close()
	path := filepath.Join(dir, CacheFile)
	for _, tc := range []struct {
		mode fs.FileMode
		warn bool
	}{{0o644, true}, {0o600, false}} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		s, err := openStore(dir, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		s.close()
		if warned := strings.Contains(logs.String(), "chmod 600 "+path); warned != tc.warn {
			t.Errorf("mode %v: warned = %v, want %v; logs:\n%s", tc.mode, warned, tc.warn, logs.String())
		}
		if fi, _ := os.Stat(path); fi.Mode() != tc.mode {
			t.Errorf("cache mode changed from %v to %v", tc.mode, fi.Mode())
		}
	}
}
