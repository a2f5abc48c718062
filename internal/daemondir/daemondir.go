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
)

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
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		// Mkdir applies the umask, which can only narrow perm; the chmod
		// that follows sets exactly perm, so there is no moment at which
		// the directory is wider than asked.
		if err := os.Mkdir(d, perm); err != nil {
			if errors.Is(err, fs.ErrExist) {
				// Made by someone else meanwhile: not ours to chmod.
				if fi, serr := os.Stat(d); serr == nil && fi.IsDir() {
					continue
				}
			}
			return false, fmt.Errorf("daemondir: create %s: %w", d, err)
		}
		if err := os.Chmod(d, perm); err != nil {
			return false, fmt.Errorf("daemondir: set mode of created directory %s: %w", d, err)
		}
		if d == dir {
			created = true
		}
	}
	return created, nil
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
