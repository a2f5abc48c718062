// Package daemondir creates the directories a daemon makes for itself (its
// data_dir, its sockets' directories) and checks the ones it finds.
//
// A directory the daemon creates gets exactly the mode asked for, whatever
// the umask; one that already exists is never changed: its mode, sticky bit
// and owner are the operator's. Shared reports whether an existing one lets
// other users in, so the daemon can warn instead of silently fixing it.
package daemondir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// afterMkdir, when set by a test, runs between creating a directory and
// opening it for its chmod: the moment another user could swap it.
var afterMkdir func(d string)

// Ensure makes dir a directory. When dir or some of its parents are
// missing, each missing one is created with permissions perm; created
// reports whether dir itself was. An existing directory is left as it is.
func Ensure(dir string, perm fs.FileMode) (created bool, err error) {
	if dir == "" {
		return false, errors.New("daemondir: directory path is empty")
	}
	dir = filepath.Clean(dir)
	perm = perm.Perm()
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return false, fmt.Errorf("daemondir: %s exists and is not a directory (move it away or choose another path)", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("daemondir: %w", err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	// Each directory is made relative to a descriptor of its parent and
	// chmodded through a descriptor of its own, so nothing renamed or
	// symlinked into a path between the two steps can redirect the chmod.
	top := missing[len(missing)-1]
	pfd, err := unix.Open(filepath.Dir(top), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("daemondir: open %s: %w", filepath.Dir(top), err)
	}
	defer func() { unix.Close(pfd) }()
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		fd, made, err := mkdirAt(pfd, d, perm)
		if err != nil {
			return false, err
		}
		unix.Close(pfd)
		pfd = fd
		if made && d == dir {
			created = true
		}
	}
	return created, nil
}

// mkdirAt creates d (named relative to its parent's descriptor pfd) with
// exactly perm and returns a descriptor of it. made is false when someone
// else created d meanwhile: that directory is used but not chmodded.
func mkdirAt(pfd int, d string, perm fs.FileMode) (fd int, made bool, err error) {
	name := filepath.Base(d)
	// Mkdir applies the umask, which can only narrow perm; the fchmod that
	// follows sets exactly perm, so there is no moment at which the
	// directory is wider than asked.
	if err := unix.Mkdirat(pfd, name, uint32(perm)); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return -1, false, fmt.Errorf("daemondir: create %s: %w", d, err)
		}
		// Made by someone else meanwhile: not ours to chmod.
		fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, false, fmt.Errorf("daemondir: create %s: %w", d, err)
		}
		return fd, false, nil
	}
	if afterMkdir != nil {
		afterMkdir(d)
	}
	// O_NOFOLLOW and the owner check make sure the fchmod reaches the
	// directory just made, not a symlink or a directory of another user
	// put in its place.
	fd, err = unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	viaProc := false
	if errors.Is(err, unix.EACCES) {
		// A perm without the owner's read bit cannot be opened for
		// fchmod; an O_PATH descriptor is chmodded through /proc.
		fd, err = unix.Openat(pfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		viaProc = true
	}
	if err != nil {
		return -1, false, fmt.Errorf("daemondir: open created directory %s: %w", d, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, false, fmt.Errorf("daemondir: stat created directory %s: %w", d, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || fs.FileMode(st.Mode).Perm()&^perm != 0 {
		return -1, false, fmt.Errorf("daemondir: %s was replaced while being created (now owned by uid %d, mode %04o); it is left untouched: check who else can write to %s", d, st.Uid, st.Mode&0o7777, filepath.Dir(d))
	}
	if viaProc {
		err = unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), uint32(perm))
	} else {
		err = unix.Fchmod(fd, uint32(perm))
	}
	if err != nil {
		return -1, false, fmt.Errorf("daemondir: set mode of created directory %s: %w", d, err)
	}
	ok = true
	return fd, true, nil
}

// Shared reports whether dir grants its group or other users any access,
// with its permission bits, so a caller can warn that files it keeps there
// can be listed (and read, if their own modes allow) by users other than
// the daemon's.
func Shared(dir string) (perm fs.FileMode, shared bool, err error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, false, fmt.Errorf("daemondir: %w", err)
	}
	perm = fi.Mode().Perm()
	return perm, perm&0o077 != 0, nil
}

// WarnShared writes msg at WARN, with args, when path (a file, or with dir
// a directory, that holds the daemon's secrets) grants its group or other
// users any access; the line adds the path, its mode and the chmod that
// fixes it. A path that does not exist is no warning. The mode is not
// changed: the file is the operator's, or an older release's.
func WarnShared(log *slog.Logger, path string, dir bool, msg string, args ...any) {
	perm, shared, err := Shared(path)
	if err != nil || !shared {
		return
	}
	fix := "chmod 600 "
	if dir {
		fix = "chmod 700 "
	}
	log.Warn(msg, append(args, "path", path, "mode", fmt.Sprintf("%04o", perm), "fix", fix+path)...)
}

// EnsureData makes dir a daemon's data directory: created 0700 when
// missing; when it exists and grants other users access, it is left as it
// is (the operator may share it on purpose) and a warning names key (the
// config key, "data_dir") and the fix. The daemon's own files in it are
// 0600 either way.
func EnsureData(dir, key string, log *slog.Logger) error {
	created, err := Ensure(dir, 0o700)
	if err != nil {
		return err
	}
	if created {
		return nil
	}
	perm, shared, err := Shared(dir)
	if err != nil {
		return err
	}
	if shared {
		log.Warn("The data directory is accessible to other users; it holds the daemon's keys and secrets (their files are 0600, but their names show and anything else put there may be readable)",
			"key", key, "path", dir, "mode", fmt.Sprintf("%04o", perm), "fix", "chmod 700 "+dir)
	}
	return nil
}
