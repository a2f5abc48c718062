// Package unixsock creates the Unix sockets the daemons listen on (the
// server's admin socket, the agent's Workload API socket) without touching
// anything the daemon did not create.
//
// Listen creates the socket's directory only when it is missing, and then
// with the mode it is given; an existing directory keeps its mode, sticky
// bit and owner. The directory and each of its ancestors must be owned by
// the daemon's uid or root and not writable by other users unless sticky:
// the socket's file permissions are what authenticates its callers, and in
// a directory another user controls that user could replace the socket. A
// path that holds anything but a socket is refused, never replaced. A
// socket left by a previous run that nothing answers on is removed; one
// that answers belongs to a live daemon and is an error.
//
// The socket is bound and given its mode inside a private (0700) directory
// Listen makes next to it, then renamed into place without replacing
// anything, so no path lookup another user could redirect reaches the
// chmod, the socket is never visible with a mode other than its final one,
// and a failed start removes nothing but what Listen made. Closing the
// listener removes the socket only while it is still the one Listen created.
//
// Directories Listen creates are left in place at Close, as SPIRE leaves
// them: a directory the daemon removed could be re-created by another local
// user (in /tmp, say) before the next start, and the daemon would then serve
// from a directory someone else controls.
package unixsock

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/internal/daemondir"
)

// probeTimeout bounds the connect that tells a stale socket from a live
// one. A connect to a Unix socket answers at once (accepted, queued or
// refused), so this only matters if the peer's backlog is full.
const probeTimeout = time.Second

// procFD is where the process's descriptors show as paths; a test points
// it elsewhere to take the path without /proc.
var procFD = "/proc/self/fd"

// maxPathLen is the room in sockaddr_un.sun_path, less its terminating NUL.
const maxPathLen = len(unix.RawSockaddrUnix{}.Path) - 1

// afterBind, when set by a test, sees the socket between bind and the
// chmod that follows (by a path that names it in its private directory),
// the moment a umask-wide mode would show.
var afterBind func(path string)

// Listener is a listening Unix socket created by Listen. Close stops it and
// removes the socket file if it is still the one Listen created.
type Listener struct {
	*net.UnixListener
	path string
	dev  uint64
	ino  uint64

	once     sync.Once
	closeErr error
}

// Listen creates a Unix stream socket at path with permissions perm, and
// serves it. When path's directory is missing it is created (with any
// missing parents), each directory with permissions dirPerm; an existing
// directory is used as it is, if it is one only the daemon (or root) can
// write to. Errors name path as socket_path, the config key of both
// daemons' sockets.
func Listen(path string, perm, dirPerm fs.FileMode) (*Listener, error) {
	if path == "" {
		return nil, errors.New("unixsock: socket path is empty")
	}
	path = filepath.Clean(path)
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("unixsock: socket path %s is %d bytes long; a Unix socket path holds at most %d (choose a shorter path)", path, len(path), maxPathLen)
	}
	dir, name := filepath.Dir(path), filepath.Base(path)
	if _, err := daemondir.Ensure(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("unixsock: socket directory: %w", err)
	}
	// Everything from here works relative to this descriptor, so the
	// directory checked is the one the socket lands in.
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unixsock: open socket directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	if err := checkDirs(dfd, dir, path); err != nil {
		return nil, err
	}
	if err := clearStale(dfd, path, name); err != nil {
		return nil, err
	}
	return bind(dfd, path, name, perm.Perm())
}

// Path is the socket's file name.
func (l *Listener) Path() string { return l.path }

// Addr is the socket's path. (The kernel's own name for it is the one it
// was bound under, in Listen's private directory.)
func (l *Listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close stops listening and removes the socket file, unless something else
// has taken its place since Listen (a newer daemon's socket, say). It is
// safe to call more than once.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.closeErr = l.UnixListener.Close()
		if l.isOurs() {
			if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				l.closeErr = errors.Join(l.closeErr, fmt.Errorf("unixsock: remove %s: %w", l.path, err))
			}
		}
	})
	return l.closeErr
}

func (l *Listener) isOurs() bool {
	var st unix.Stat_t
	if err := unix.Lstat(l.path, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFSOCK && st.Dev == l.dev && st.Ino == l.ino
}

// checkDirs refuses a socket directory (dfd, named dir) or an ancestor of
// it that a user other than the daemon's and root could write to: such a
// user could rename the socket away and put their own in its place, and
// the socket's mode is all that authenticates the daemon's callers.
func checkDirs(dfd int, dir, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return fmt.Errorf("unixsock: stat socket directory %s: %w", dir, err)
	}
	if err := trusted(&st, dir, path, "directory"); err != nil {
		return err
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if err := unix.Stat(d, &st); err != nil {
			return fmt.Errorf("unixsock: stat %s, an ancestor of socket_path %s: %w", d, path, err)
		}
		if err := trusted(&st, d, path, "ancestor directory"); err != nil {
			return err
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// trusted applies checkDirs' rule to one directory. Group write is allowed
// for the daemon's own group and root's: the admin socket's directory is
// 0770 by default (the group is who may use the socket), and members of
// those groups are the daemon's to choose.
func trusted(st *unix.Stat_t, d, path, what string) error {
	uid, gid := os.Geteuid(), os.Getegid()
	mode := st.Mode & 0o7777
	if int(st.Uid) != uid && st.Uid != 0 {
		return fmt.Errorf("unixsock: socket_path %s: its %s %s is owned by uid %d (mode %04o), neither this daemon's uid %d nor root, so that user could replace the socket; chown it to uid %d or root (chown %d %s), or set socket_path to a directory that is",
			path, what, d, st.Uid, mode, uid, uid, uid, d)
	}
	if mode&unix.S_ISVTX != 0 {
		return nil
	}
	if mode&0o002 != 0 || (mode&0o020 != 0 && int(st.Gid) != gid && st.Gid != 0) {
		return fmt.Errorf("unixsock: socket_path %s: its %s %s (uid %d, gid %d, mode %04o) is writable by other users without the sticky bit, so they could replace the socket; remove their write access (chmod go-w %s) or set the sticky bit (chmod +t %s), or set socket_path to another directory",
			path, what, d, st.Uid, st.Gid, mode, d, d)
	}
	return nil
}

// clearStale makes name (in dfd, the directory of path) free for the
// socket: nothing there, or a socket nobody answers on (removed, if it is
// still the one probed). Anything else is refused.
func clearStale(dfd int, path, name string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unixsock: inspect %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("unixsock: %s exists and is not a socket (%s); it is left untouched: move it away or set the socket path to another file", path, describe(st.Mode))
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("unixsock: %s is in use: another process is serving on it (stop it, or set the socket path to another file)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unixsock: %s exists and cannot be probed, so it is left untouched: %w", path, err)
	}
	// Unlink has no by-inode form: look again, and remove only the socket
	// the probe found. (The directory passed checkDirs, so only the daemon,
	// root or, in a sticky directory, the stale socket's owner could swap
	// it in between.)
	var again unix.Stat_t
	if err := unix.Fstatat(dfd, name, &again, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unixsock: inspect %s: %w", path, err)
	}
	if again.Dev != st.Dev || again.Ino != st.Ino {
		return fmt.Errorf("unixsock: %s changed while starting (another process is starting on it?); it is left untouched", path)
	}
	if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unixsock: remove stale socket %s: %w", path, err)
	}
	return nil
}

func describe(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	default:
		return fmt.Sprintf("mode %o", m)
	}
}

// bind creates the socket name in dfd (the directory of path) with mode
// perm, listening.
//
// It binds in a fresh 0700 directory beside the final name, where no other
// user can put anything, and sets the mode there: on Linux the inode bind
// creates takes the socket's own mode (set by fchmod before bind) less the
// umask, so it is never wider than perm, and a chmod by name in the
// private directory widens it to exactly perm. (A socket's inode cannot be
// opened for fchmod, fchmod on an O_PATH descriptor is EBADF, and
// fchmodat's AT_SYMLINK_NOFOLLOW needs fchmodat2, Linux 6.6: it is used
// where there, the private directory being what makes the plain fchmodat
// safe elsewhere.) Changing
// the process umask instead would race with every other goroutine that
// creates files meanwhile. The socket then moves to its name with
// RENAME_NOREPLACE, so it replaces nothing, and callers only ever see it
// listening with its final mode.
func bind(dfd int, path, name string, perm fs.FileMode) (*Listener, error) {
	tmpName, tfd, err := privateDir(dfd, path)
	if err != nil {
		return nil, err
	}
	// The private directory goes in every case; on success it is empty.
	inTmp := false
	defer func() {
		if inTmp {
			unix.Unlinkat(tfd, "s", 0)
		}
		unix.Close(tfd)
		unix.Unlinkat(dfd, tmpName, unix.AT_REMOVEDIR)
	}()

	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unixsock: socket: %w", err)
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	if err := unix.Fchmod(fd, uint32(perm)); err != nil {
		return nil, fmt.Errorf("unixsock: set socket mode before bind: %w", err)
	}
	// Bound through the private directory's descriptor, the name stays
	// short however long path is; without /proc, by its path.
	bindPath := fmt.Sprintf("%s/%d/s", procFD, tfd)
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: bindPath})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		bindPath = filepath.Join(filepath.Dir(path), tmpName, "s")
		if len(bindPath) > maxPathLen {
			return nil, fmt.Errorf("unixsock: socket path %s is too long to create without /proc (its directory's path may be at most %d bytes): choose a shorter path", path, maxPathLen-len(tmpName)-3)
		}
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: bindPath})
	}
	if err != nil {
		return nil, fmt.Errorf("unixsock: bind %s: %w", path, err)
	}
	inTmp = true
	if afterBind != nil {
		afterBind(bindPath)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, "s", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("unixsock: stat new socket for %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("unixsock: the socket bound for %s is now %s in Listen's private directory; refusing it", path, describe(st.Mode))
	}
	if fs.FileMode(st.Mode).Perm()&^perm != 0 {
		// The kernel ignored the fchmod: refuse rather than serve from a
		// socket that was briefly wider than asked.
		return nil, fmt.Errorf("unixsock: the socket for %s was created with mode %o, wider than %o", path, st.Mode&0o7777, perm)
	}
	err = unix.Fchmodat(tfd, "s", uint32(perm), unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// No fchmodat2, or "s" has become a symlink: only the former
		// gets the plain fchmodat.
		var again unix.Stat_t
		if err = unix.Fstatat(tfd, "s", &again, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			if again.Mode&unix.S_IFMT != unix.S_IFSOCK || again.Ino != st.Ino || again.Dev != st.Dev {
				return nil, fmt.Errorf("unixsock: the socket bound for %s was replaced in Listen's private directory; refusing it", path)
			}
			err = unix.Fchmodat(tfd, "s", uint32(perm), 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("unixsock: set mode of %s: %w", path, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	if err := moveNoReplace(tfd, dfd, name); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("unixsock: %s appeared while starting (another process is starting on it?); it is left untouched", path)
		}
		return nil, fmt.Errorf("unixsock: move socket into place at %s: %w", path, err)
	}
	inTmp = false
	l := &Listener{path: path, dev: st.Dev, ino: st.Ino}
	f := os.NewFile(uintptr(fd), path)
	ln, err := net.FileListener(f)
	// FileListener dups the descriptor; ours is closed either way (and
	// not again by the deferred cleanup).
	f.Close()
	fd = -1
	if err != nil {
		if l.isOurs() {
			os.Remove(path)
		}
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// Close removes the file itself, only while it is still ours.
	ul.SetUnlinkOnClose(false)
	l.UnixListener = ul
	return l, nil
}

// privateDir makes a fresh 0700 directory in dfd for bind, and returns its
// name and an O_PATH descriptor of it, checked to be the directory made.
func privateDir(dfd int, path string) (string, int, error) {
	var rnd [6]byte
	for range 10 {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", -1, fmt.Errorf("unixsock: %w", err)
		}
		name := "." + hex.EncodeToString(rnd[:])
		err := unix.Mkdirat(dfd, name, 0o700)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", -1, fmt.Errorf("unixsock: create a private directory beside %s: %w", path, err)
		}
		tfd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
			return "", -1, fmt.Errorf("unixsock: open the private directory beside %s: %w", path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(tfd, &st); err != nil {
			unix.Close(tfd)
			unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
			return "", -1, fmt.Errorf("unixsock: stat the private directory beside %s: %w", path, err)
		}
		if int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
			unix.Close(tfd)
			return "", -1, fmt.Errorf("unixsock: the private directory beside %s was replaced while starting (by one of uid %d, mode %04o)", path, st.Uid, st.Mode&0o7777)
		}
		return name, tfd, nil
	}
	return "", -1, fmt.Errorf("unixsock: create a private directory beside %s: names taken", path)
}

// moveNoReplace moves the socket "s" from the private directory tfd to
// name in dfd, failing with EEXIST if name exists. A file system without
// RENAME_NOREPLACE gets a hard link (which never replaces either) and an
// unlink instead.
func moveNoReplace(tfd, dfd int, name string) error {
	err := unix.Renameat2(tfd, "s", dfd, name, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	if err := unix.Linkat(tfd, "s", dfd, name, 0); err != nil {
		return err
	}
	return unix.Unlinkat(tfd, "s", 0)
}
