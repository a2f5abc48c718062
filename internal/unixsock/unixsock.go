// Package unixsock creates the Unix sockets the daemons listen on (the
// server's admin socket, the agent's Workload API socket) without touching
// anything the daemon did not create.
//
// Listen creates the socket's directory only when it is missing, and then
// with the mode it is given; an existing directory keeps its mode, sticky
// bit and owner. A path that holds anything but a socket is refused, never
// replaced. A socket left by a previous run that nothing answers on is
// removed; one that answers belongs to a live daemon and is an error. The
// socket gets its final mode without a moment at which the process umask
// could have made it wider, and closing the listener removes the socket only
// while it is still the one Listen created.
//
// Directories Listen creates are left in place at Close, as SPIRE leaves
// them: a directory the daemon removed could be re-created by another local
// user (in /tmp, say) before the next start, and the daemon would then serve
// from a directory someone else controls.
package unixsock

import (
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

// maxPathLen is the room in sockaddr_un.sun_path, less its terminating NUL.
const maxPathLen = len(unix.RawSockaddrUnix{}.Path) - 1

// afterBind, when set by a test, sees the socket between bind and the
// chmod that follows, the moment a umask-wide mode would show.
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
// directory is used as it is.
func Listen(path string, perm, dirPerm fs.FileMode) (*Listener, error) {
	if path == "" {
		return nil, errors.New("unixsock: socket path is empty")
	}
	path = filepath.Clean(path)
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("unixsock: socket path %s is %d bytes long; a Unix socket path holds at most %d (choose a shorter path)", path, len(path), maxPathLen)
	}
	if _, err := daemondir.Ensure(filepath.Dir(path), dirPerm); err != nil {
		return nil, fmt.Errorf("unixsock: socket directory: %w", err)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	return bind(path, perm.Perm())
}

// Path is the socket's file name.
func (l *Listener) Path() string { return l.path }

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

// clearStale makes path free for bind: nothing there, or a socket nobody
// answers on (removed). Anything else is refused.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unixsock: inspect %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("unixsock: %s exists and is not a socket (%s); it is left untouched: move it away or set the socket path to another file", path, describe(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("unixsock: %s is in use: another process is serving on it (stop it, or set the socket path to another file)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unixsock: %s exists and cannot be probed, so it is left untouched: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unixsock: remove stale socket %s: %w", path, err)
	}
	return nil
}

func describe(m fs.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "a regular file"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeDevice != 0:
		return "a device"
	default:
		return "mode " + m.String()
	}
}

// bind creates the socket with mode perm. On Linux the inode bind creates
// takes the socket's own mode (set by fchmod before bind) less the umask,
// so it can be no wider than perm at any moment; the chmod after bind
// widens it to exactly perm. Changing the process umask instead would race
// with every other goroutine that creates files meanwhile.
func bind(path string, perm fs.FileMode) (_ *Listener, err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unixsock: socket: %w", err)
	}
	bound := false
	defer func() {
		if err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			if bound {
				os.Remove(path)
			}
		}
	}()
	if err := unix.Fchmod(fd, uint32(perm)); err != nil {
		return nil, fmt.Errorf("unixsock: set socket mode before bind: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("unixsock: %s appeared while starting (another process is starting on it?): %w", path, err)
		}
		return nil, fmt.Errorf("unixsock: bind %s: %w", path, err)
	}
	bound = true
	if afterBind != nil {
		afterBind(path)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, fmt.Errorf("unixsock: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || fs.FileMode(st.Mode).Perm()&^perm != 0 {
		// The kernel ignored the fchmod: refuse rather than serve from a
		// socket that was briefly wider than asked.
		return nil, fmt.Errorf("unixsock: %s was created with mode %o, wider than %o", path, st.Mode&0o7777, perm)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, path, uint32(perm), 0); err != nil {
		return nil, fmt.Errorf("unixsock: set mode of %s: %w", path, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	ln, err := net.FileListener(f)
	// FileListener dups the descriptor; ours is closed either way (and
	// not again by the deferred cleanup).
	f.Close()
	fd = -1
	if err != nil {
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// Close removes the file itself, only while it is still ours.
	ul.SetUnlinkOnClose(false)
	return &Listener{UnixListener: ul, path: path, dev: st.Dev, ino: st.Ino}, nil
}
