package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"

	"github.com/spiffe-hw/spire-hw/internal/peercred"
)

// method is how the handshake obtains the caller's pidfd.
type method int

const (
	// methodPeerPIDFD asks the socket (SO_PEERPIDFD, Linux >= 6.5). The
	// kernel pins the process at connect(2), so there is no window in which
	// a reused PID could be mistaken for the caller.
	methodPeerPIDFD method = iota + 1
	// methodPIDFDOpen opens a pidfd for the SO_PEERCRED PID. If the caller
	// exits and its PID is reused between connect(2) and this call, the
	// pidfd names the wrong process; the window is short but real.
	methodPIDFDOpen
)

func (m method) String() string {
	switch m {
	case methodPeerPIDFD:
		return "SO_PEERPIDFD"
	case methodPIDFDOpen:
		return "pidfd_open"
	default:
		return "none"
	}
}

// Credentials are server-side gRPC transport credentials for a Unix-socket
// listener. They do no cryptography: the handshake only asks the kernel who
// the peer is. Client handshakes are refused.
type Credentials struct {
	log    *slog.Logger
	method method
}

var _ credentials.TransportCredentials = (*Credentials)(nil)

// NewCredentials probes once which way of getting a caller's pidfd the
// kernel supports and logs the choice. It fails if neither SO_PEERPIDFD nor
// pidfd_open works (Linux < 5.3): without a pidfd the PID-reuse race cannot
// be closed, and this agent does not serve workloads on a guess.
func NewCredentials(log *slog.Logger) (*Credentials, error) {
	if log == nil {
		log = slog.Default()
	}
	m, why, err := probe()
	if err != nil {
		return nil, err
	}
	if m == methodPeerPIDFD {
		log.Info("peer: caller pidfd from the socket", "method", m.String(), "why", why)
	} else {
		log.Warn("peer: caller pidfd opened after accept", "method", m.String(), "why", why)
	}
	return &Credentials{log: log, method: m}, nil
}

// Method names the way pidfds are obtained: "SO_PEERPIDFD" or "pidfd_open".
func (c *Credentials) Method() string { return c.method.String() }

// probe tries SO_PEERPIDFD on a socketpair, then pidfd_open on ourselves.
func probe() (method, string, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, "", fmt.Errorf("peer: probe: socketpair: %w", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])

	pidfd, peerErr := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if peerErr == nil {
		unix.Close(pidfd)
		return methodPeerPIDFD, "kernel supports SO_PEERPIDFD: the pidfd is bound at connect, no PID-reuse window", nil
	}
	pidfd, openErr := unix.PidfdOpen(os.Getpid(), 0)
	if openErr == nil {
		unix.Close(pidfd)
		return methodPIDFDOpen, fmt.Sprintf("SO_PEERPIDFD unsupported (%v; needs Linux >= 6.5): a PID reused between connect and accept could be mistaken for the caller", peerErr), nil
	}
	return 0, "", fmt.Errorf("peer: probe: no pidfd support (SO_PEERPIDFD: %v; pidfd_open: %w)", peerErr, openErr)
}

// Ucred returns the credentials the kernel recorded for c's peer when it
// called connect(2) (SO_PEERCRED). c must be a Unix socket. Its UID and GID
// are as seen from this process's user namespace: every uid-0 process of
// containers without a user namespace of their own reads as 0.
func Ucred(c net.Conn) (*unix.Ucred, error) {
	u, err := ucred(c)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	return u, nil
}

func ucred(c net.Conn) (*unix.Ucred, error) { return peercred.Read(c) }

func syscallConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T is not a socket", c)
	}
	return sc.SyscallConn()
}

// ServerHandshake reads the caller's credentials and pidfd from the socket.
// The returned connection closes the pidfd when it closes.
func (c *Credentials) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cred, err := ucred(rawConn)
	if err != nil {
		return nil, nil, fmt.Errorf("peer: handshake: %w", err)
	}
	pidfd := -1
	if c.method == methodPeerPIDFD {
		if pidfd, err = peerPIDFD(rawConn); err != nil {
			return nil, nil, fmt.Errorf("peer: handshake: %w", err)
		}
	}
	if cred.Pid <= 0 {
		// The peer lives in a PID namespace we cannot see.
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return nil, nil, errors.New("peer: handshake: caller PID not visible from this PID namespace")
	}
	if c.method == methodPIDFDOpen {
		pidfd, err = unix.PidfdOpen(int(cred.Pid), 0)
		if err != nil {
			return nil, nil, fmt.Errorf("peer: handshake: pidfd_open(%d): %w", cred.Pid, err)
		}
	}
	unix.CloseOnExec(pidfd)

	info := newInfo(cred.Pid, cred.Uid, cred.Gid, pidfd)
	ai := AuthInfo{
		// Same level gRPC's local credentials give a Unix socket: the bytes
		// never leave the kernel.
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Info:           info,
	}
	return &conn{Conn: rawConn, info: info}, ai, nil
}

// peerPIDFD returns a pidfd for c's peer as the kernel pinned it at
// connect(2) (SO_PEERPIDFD); the caller owns it.
func peerPIDFD(c net.Conn) (int, error) {
	rc, err := syscallConn(c)
	if err != nil {
		return -1, err
	}
	pidfd := -1
	var optErr error
	if err := rc.Control(func(fd uintptr) {
		pidfd, optErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return -1, fmt.Errorf("SO_PEERPIDFD: %w", err)
	}
	if optErr != nil {
		return -1, fmt.Errorf("SO_PEERPIDFD: %w", optErr)
	}
	return pidfd, nil
}

// ClientHandshake is refused: these credentials only serve.
func (c *Credentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peer: client handshake not supported")
}

// Info implements credentials.TransportCredentials.
func (c *Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: AuthType}
}

// Clone implements credentials.TransportCredentials.
func (c *Credentials) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName implements credentials.TransportCredentials; gRPC no
// longer calls it.
func (c *Credentials) OverrideServerName(string) error { return nil }

// conn closes the caller's pidfd together with the socket.
type conn struct {
	net.Conn
	info *Info
	once sync.Once
	err  error
}

func (c *conn) Close() error {
	c.once.Do(func() {
		ferr := c.info.close()
		c.err = errors.Join(c.Conn.Close(), ferr)
	})
	return c.err
}
