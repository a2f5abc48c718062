package manager

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
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
			s, err := openStore(dir)
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
			s, err = openStore(dir)
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
