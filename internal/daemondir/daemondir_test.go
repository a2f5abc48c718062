package daemondir

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

func TestEnsureCreatesWithExactMode(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o077} {
		old := syscall.Umask(mask)
		base := t.TempDir()
		dir := filepath.Join(base, "a", "data")
		created, err := Ensure(dir, 0o700)
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		if !created {
			t.Errorf("umask %o: created = false for a new directory", mask)
		}
		for _, d := range []string{filepath.Join(base, "a"), dir} {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != fs.ModeDir|0o700 {
				t.Errorf("umask %o: %s mode %v, want drwx------", mask, d, fi.Mode())
			}
		}
		if _, shared, _ := Shared(dir); shared {
			t.Errorf("umask %o: a created 0700 directory reported shared", mask)
		}
	}
}

func TestEnsureLeavesExistingDirectory(t *testing.T) {
	for _, m := range []fs.FileMode{0o755, fs.ModeSticky | 0o777, 0o750} {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, m); err != nil {
			t.Fatal(err)
		}
		created, err := Ensure(dir, 0o700)
		if err != nil || created {
			t.Fatalf("Ensure(existing %v) = %v, %v", m, created, err)
		}
		fi, _ := os.Stat(dir)
		if fi.Mode() != fs.ModeDir|m {
			t.Errorf("existing %v became %v", m, fi.Mode())
		}
		perm, shared, err := Shared(dir)
		if err != nil || !shared || perm != m.Perm() {
			t.Errorf("Shared(%v) = %v, %v, %v; want shared", m, perm, shared, err)
		}
	}
}

func TestEnsureRefusesFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f, filepath.Join(f, "sub")} {
		if _, err := Ensure(p, 0o700); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("Ensure(%s) = %v, want not-a-directory error", p, err)
		}
	}
	if data, _ := os.ReadFile(f); string(data) != "keep" {
		t.Error("file changed")
	}
}

func TestEnsureDataWarnsOnlyForASharedExistingDirectory(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing fs.FileMode // 0: missing
		warn     bool
	}{
		{"missing", 0, false},
		{"existing 0700", 0o700, false},
		{"existing 0755", 0o755, true},
		{"existing 0750", 0o750, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if tc.existing != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			if err := EnsureData(dir, "data_dir", slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
				t.Fatal(err)
			}
			out := logs.String()
			warned := strings.Contains(out, "level=WARN")
			if warned != tc.warn {
				t.Fatalf("warned = %v, want %v; logs:\n%s", warned, tc.warn, out)
			}
			if warned && (!strings.Contains(out, dir) || !strings.Contains(out, "chmod 700") || !strings.Contains(out, "key=data_dir")) {
				t.Errorf("warning should name the key, the path and the fix:\n%s", out)
			}
			want := tc.existing
			if want == 0 {
				want = 0o700
			}
			if fi, _ := os.Stat(dir); fi.Mode().Perm() != want {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), want)
			}
		})
	}
}

// TestEnsureChmodsOnlyTheDirectoryItMade: a directory swapped for a symlink
// (or for another user's directory) between mkdir and chmod is refused, and
// what the swap points at keeps its mode.
func TestEnsureChmodsOnlyTheDirectoryItMade(t *testing.T) {
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "data")
	afterMkdir = func(d string) {
		if err := os.Remove(d); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(victim, d); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterMkdir = nil }()
	_, err := Ensure(dir, 0o700)
	if err == nil {
		t.Fatal("Ensure succeeded after its directory was swapped for a symlink")
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q should name %s", err, dir)
	}
	fi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("the symlink's target was chmodded to %v", fi.Mode().Perm())
	}
}

// TestEnsureRefusesAnotherUsersDirectoryInItsPlace: a directory of another
// user moved in between mkdir and chmod is refused and keeps its mode.
func TestEnsureRefusesAnotherUsersDirectoryInItsPlace(t *testing.T) {
	simtest.RequireRoot(t)
	base := t.TempDir()
	foreign := filepath.Join(base, "foreign")
	if err := os.Mkdir(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(foreign, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "data")
	afterMkdir = func(d string) {
		if err := os.Remove(d); err != nil {
			t.Error(err)
		}
		if err := os.Rename(foreign, d); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterMkdir = nil }()
	if _, err := Ensure(dir, 0o700); err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("Ensure = %v, want a refusal naming the other owner", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the other user's directory: %v, %v; want it left 0755", fi.Mode(), err)
	}
}
