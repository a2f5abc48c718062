package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// shortDir returns a fresh directory with a path short enough for sockets
// (t.TempDir's names can pass sun_path's 107 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "us")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// withUmask runs the rest of the test under mask and restores the old one.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func currentUmask() int {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return m
}

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// roundTrip proves l serves: a client connects and its byte arrives.
func roundTrip(t *testing.T, l net.Listener, path string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		_, err = c.Read(b)
		if err == nil && b[0] != 'x' {
			err = errors.New("wrong byte")
		}
		done <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// staleSocket leaves a socket file at p that nothing listens on, as a
// daemon killed with SIGKILL does.
func staleSocket(t *testing.T, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

func TestCreatesMissingDirectoriesWithExactModes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		umask         int
		perm, dirPerm fs.FileMode
	}{
		{"admin umask 022", 0o022, 0o770, 0o770},
		{"admin umask 0", 0, 0o770, 0o770},
		{"admin umask 077", 0o077, 0o770, 0o770},
		{"workload umask 022", 0o022, 0o777, 0o755},
		{"workload umask 0", 0, 0o777, 0o755},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withUmask(t, tc.umask)
			base := shortDir(t)
			sock := filepath.Join(base, "a", "b", "api.sock")
			l, err := Listen(sock, tc.perm, tc.dirPerm)
			if err != nil {
				t.Fatal(err)
			}
			if got := currentUmask(); got != tc.umask {
				t.Errorf("umask after Listen = %o, want %o untouched", got, tc.umask)
			}
			for _, d := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b")} {
				if got := mode(t, d); got != fs.ModeDir|tc.dirPerm {
					t.Errorf("created %s: mode %v, want %v", d, got, fs.ModeDir|tc.dirPerm)
				}
			}
			if got := mode(t, sock); got != fs.ModeSocket|tc.perm {
				t.Errorf("socket mode %v, want %v", got, fs.ModeSocket|tc.perm)
			}
			roundTrip(t, l, sock)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket after Close: %v, want it removed", err)
			}
			// Created directories stay (see the package comment).
			if got := mode(t, filepath.Join(base, "a", "b")); got != fs.ModeDir|tc.dirPerm {
				t.Errorf("created directory after Close: %v", got)
			}
		})
	}
}

func TestExistingDirectoryKeepsModeAndStickyBit(t *testing.T) {
	for _, dirMode := range []fs.FileMode{fs.ModeSticky | 0o777, 0o755, 0o700} {
		t.Run(dirMode.String(), func(t *testing.T) {
			dir := filepath.Join(shortDir(t), "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			// os.Chmod maps ModeSticky to S_ISVTX.
			if err := os.Chmod(dir, dirMode); err != nil {
				t.Fatal(err)
			}
			want := mode(t, dir)
			if want.Perm() != dirMode.Perm() || want&fs.ModeSticky != dirMode&fs.ModeSticky {
				t.Fatalf("setup: mode %v, want %v", want, dirMode)
			}
			var before unix.Stat_t
			if err := unix.Stat(dir, &before); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "api.sock")
			l, err := Listen(sock, 0o770, 0o770)
			if err != nil {
				t.Fatal(err)
			}
			if got := mode(t, dir); got != want {
				t.Errorf("after start: directory mode %v, want %v", got, want)
			}
			roundTrip(t, l, sock)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if got := mode(t, dir); got != want {
				t.Errorf("after shutdown: directory mode %v, want %v", got, want)
			}
			var after unix.Stat_t
			if err := unix.Stat(dir, &after); err != nil {
				t.Fatal(err)
			}
			if after.Uid != before.Uid || after.Gid != before.Gid {
				t.Errorf("owner changed: %d:%d -> %d:%d", before.Uid, before.Gid, after.Uid, after.Gid)
			}
		})
	}
}

func TestRefusesNonSocketAndLeavesIt(t *testing.T) {
	dir := shortDir(t)
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		make       func(p string) error
	}{
		{"regular file", "a regular file", func(p string) error { return os.WriteFile(p, []byte("precious"), 0o640) }},
		{"directory", "a directory", func(p string) error { return os.Mkdir(p, 0o750) }},
		{"symlink", "a symbolic link", func(p string) error { return os.Symlink(target, p) }},
		{"named pipe", "a named pipe", func(p string) error { return unix.Mkfifo(p, 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			before := mode(t, p)
			l, err := Listen(p, 0o770, 0o770)
			if err == nil {
				l.Close()
				t.Fatal("Listen succeeded over a non-socket")
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "socket path") {
				t.Errorf("error %q should name %s, say it is %s and give the fix", err, p, tc.want)
			}
			if got := mode(t, p); got != before {
				t.Errorf("mode changed: %v -> %v", before, got)
			}
		})
	}
	data, err := os.ReadFile(filepath.Join(dir, "regular_file"))
	if err != nil || string(data) != "precious" {
		t.Errorf("regular file after refusal: %q, %v", data, err)
	}
	if data, err := os.ReadFile(target); err != nil || string(data) != "keep" {
		t.Errorf("symlink target after refusal: %q, %v", data, err)
	}
}

func TestRefusesFileAsDirectory(t *testing.T) {
	dir := shortDir(t)
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(f, "api.sock"), 0o770, 0o770); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Listen under a regular file: %v, want a not-a-directory error", err)
	}
}

func TestRemovesStaleSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	staleSocket(t, sock)
	if mode(t, sock).Type() != fs.ModeSocket {
		t.Fatal("setup: no stale socket")
	}
	l, err := Listen(sock, 0o770, 0o770)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	roundTrip(t, l, sock)
}

func TestRefusesLiveSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	other, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l, err := Listen(sock, 0o770, 0o770)
	if err == nil {
		l.Close()
		t.Fatal("Listen took over a live socket")
	}
	if !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), sock) {
		t.Errorf("error %q should say %s is in use", err, sock)
	}
	// The probe was a connection like any other; the other daemon takes
	// it and then still serves new callers on its socket.
	probe, err := other.Accept()
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	roundTrip(t, other, sock)
}

func TestCloseLeavesASocketThatReplacedOurs(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	l, err := Listen(sock, 0o770, 0o770)
	if err != nil {
		t.Fatal(err)
	}
	// Someone removed ours and a newer daemon bound the path.
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	newer, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if mode(t, sock).Type() != fs.ModeSocket {
		t.Fatal("Close removed the newer daemon's socket")
	}
	roundTrip(t, newer, sock)
}

func TestRejectsBadPaths(t *testing.T) {
	if _, err := Listen("", 0o770, 0o770); err == nil {
		t.Error("empty path accepted")
	}
	long := "/tmp/" + strings.Repeat("x", maxPathLen)
	if _, err := Listen(long, 0o770, 0o770); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("overlong path: %v", err)
	}
}

// The socket is never wider than its final mode, even at the moment
// between bind and chmod, whatever the umask: umask 0 would make a plain
// bind 0777, which for an admin socket lets every local user in.
func TestNoMomentWiderThanTheMode(t *testing.T) {
	for _, tc := range []struct {
		umask int
		perm  fs.FileMode
	}{{0, 0o770}, {0, 0o700}, {0o022, 0o777}, {0o077, 0o770}} {
		withUmask(t, tc.umask)
		var seen fs.FileMode
		sock := filepath.Join(shortDir(t), "api.sock")
		visible := false
		afterBind = func(p string) {
			seen = mode(t, p)
			_, err := os.Lstat(sock)
			visible = err == nil
		}
		l, err := Listen(sock, tc.perm, 0o700)
		afterBind = nil
		if err != nil {
			t.Fatal(err)
		}
		if seen.Type() != fs.ModeSocket || seen.Perm()&^tc.perm != 0 {
			t.Errorf("umask %04o, mode %v: right after bind the socket was %v", tc.umask, tc.perm, seen)
		}
		if visible {
			t.Errorf("umask %04o: the socket was at its path before it had its mode", tc.umask)
		}
		if got := mode(t, sock); got != fs.ModeSocket|tc.perm {
			t.Errorf("umask %04o: final mode %v, want %v", tc.umask, got, fs.ModeSocket|tc.perm)
		}
		l.Close()
	}
}

// leftovers lists what Listen may have left in dir besides keep: its
// private directories are dot-names.
func leftovers(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !slices.Contains(keep, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestRefusesDirectoryOthersCanReplaceSocketIn: the socket's file mode is
// what authenticates its callers, so a directory (or an ancestor) another
// user owns or may write to without the sticky bit is refused, with the
// key, the directory, its owner and mode and the fix; nothing is created
// in it.
func TestRefusesDirectoryOthersCanReplaceSocketIn(t *testing.T) {
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name      string
		mode      fs.FileMode
		uid, gid  int // -1: leave as created
		ancestor  bool
		needsRoot bool
		refuse    string // "" accepted
	}{
		{"ours 0755", 0o755, -1, -1, false, false, ""},
		{"ours 0770, our group", 0o770, -1, -1, false, false, ""},
		{"ours sticky 1777", fs.ModeSticky | 0o777, -1, -1, false, false, ""},
		{"ours 0777", 0o777, -1, -1, false, false, "chmod go-w"},
		{"ours 0757", 0o757, -1, -1, false, false, "chmod go-w"},
		{"ours 0770, another group", 0o770, -1, 65534, false, true, "gid 65534"},
		{"another user's 0755", 0o755, 65534, -1, false, true, "uid 65534"},
		{"another user's sticky 1777", fs.ModeSticky | 0o777, 65534, -1, false, true, "uid 65534"},
		{"ancestor another user's", 0o755, 65534, -1, true, true, "uid 65534"},
		{"ancestor 0777", 0o777, -1, -1, true, false, "chmod go-w"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needsRoot && !root {
				simtest.RequireRoot(t)
			}
			d := filepath.Join(shortDir(t), "d")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.uid >= 0 || tc.gid >= 0 {
				if err := os.Chown(d, tc.uid, tc.gid); err != nil {
					t.Fatal(err)
				}
			}
			dir := d
			if tc.ancestor {
				// Ours and private, inside the directory under test.
				dir = filepath.Join(d, "private")
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			sock := filepath.Join(dir, "api.sock")
			l, err := Listen(sock, 0o770, 0o770)
			if tc.refuse == "" {
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, l, sock)
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("Listen in %s accepted", tc.name)
			}
			for _, want := range []string{"socket_path", sock, d, tc.refuse, fmt.Sprintf("%04o", uint32(tc.mode.Perm())|sticky(tc.mode))} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if left := leftovers(t, dir); len(left) != 0 {
				t.Errorf("left in the refused directory: %v", left)
			}
		})
	}
}

func sticky(m fs.FileMode) uint32 {
	if m&fs.ModeSticky != 0 {
		return unix.S_ISVTX
	}
	return 0
}

// TestSocketDirectlyInTmp: /tmp, root's and sticky, is a fine directory
// for a socket.
func TestSocketDirectlyInTmp(t *testing.T) {
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("us-%d-%d.sock", os.Getpid(), time.Now().UnixNano()))
	l, err := Listen(sock, 0o770, 0o770)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	roundTrip(t, l, sock)
}

// TestFailedStartLeavesWhatItDidNotMake: a file another process puts at the
// path while Listen is starting is left as it is, and Listen fails and
// cleans up only its own.
func TestFailedStartLeavesWhatItDidNotMake(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	afterBind = func(string) {
		// Whatever is at the final path now is another process's.
		if err := os.RemoveAll(sock); err != nil {
			t.Error(err)
		}
		if err := os.WriteFile(sock, []byte("theirs"), 0o644); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterBind = nil }()
	l, err := Listen(sock, 0o770, 0o770)
	if err == nil {
		l.Close()
		t.Fatal("Listen succeeded with another file at its path")
	}
	if data, err := os.ReadFile(sock); err != nil || string(data) != "theirs" {
		t.Fatalf("the other process's file after the failed start: %q, %v", data, err)
	}
	if left := leftovers(t, dir, "api.sock"); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestLongestPathWorks: a socket path of the full sun_path length binds
// (the private directory's longer name is never what is bound).
func TestLongestPathWorks(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, strings.Repeat("s", maxPathLen-len(dir)-1))
	if len(sock) != maxPathLen {
		t.Fatalf("setup: %d bytes", len(sock))
	}
	l, err := Listen(sock, 0o770, 0o770)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != sock {
		t.Errorf("Addr() = %s, want the socket path", got)
	}
	roundTrip(t, l, sock)
}

// TestWithoutProc: where /proc is missing the socket is bound by its
// private directory's path, and a path too long for that is refused with
// the limit.
func TestWithoutProc(t *testing.T) {
	procFD = "/nonexistent-proc/self/fd"
	defer func() { procFD = "/proc/self/fd" }()
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	l, err := Listen(sock, 0o770, 0o770)
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(t, sock); got != fs.ModeSocket|0o770 {
		t.Errorf("socket mode %v", got)
	}
	roundTrip(t, l, sock)
	l.Close()

	// A short name in a long directory: the private directory's path
	// is longer than the socket's.
	deep := filepath.Join(dir, strings.Repeat("d", maxPathLen-len(dir)-10))
	long := filepath.Join(deep, "a.sock")
	if _, err := Listen(long, 0o770, 0o770); err == nil || !strings.Contains(err.Error(), "without /proc") {
		t.Fatalf("Listen(%d-byte path) without /proc: %v, want a too-long error", len(long), err)
	}
	if left := leftovers(t, deep); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestChmodNeverReachesASwappedInSymlink: were the bound socket replaced by
// a symlink before its chmod, Listen refuses, the symlink's target keeps
// its mode, and nothing is left at the path.
func TestChmodNeverReachesASwappedInSymlink(t *testing.T) {
	dir := shortDir(t)
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	afterBind = func(p string) {
		if err := os.Remove(p); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(victim, p); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterBind = nil }()
	l, err := Listen(sock, 0o777, 0o755)
	if err == nil {
		l.Close()
		t.Fatal("Listen succeeded with its socket swapped for a symlink")
	}
	if got := mode(t, victim); got != 0o600 {
		t.Errorf("symlink target mode %v, want -rw------- untouched", got)
	}
	if left := leftovers(t, dir, "victim"); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
