// Package peer identifies the process on the other end of a Workload API
// Unix-socket connection. The kernel's peer credentials (SO_PEERCRED) give a
// PID, but a PID is only a number that the kernel hands out again once the
// process is gone; a pidfd is a handle on the process itself. This package
// takes the pidfd at accept time (SO_PEERPIDFD, or pidfd_open as a fallback)
// so that the Workload API can later prove that the process it attested is
// still the one that connected.
//
// Use NewCredentials as the gRPC server's transport credentials on a Unix
// listener, then FromContext in a handler.
package peer

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
)

// AuthType is the value AuthInfo.AuthType returns.
const AuthType = "spiffe-hw-peer"

// ErrExited is returned by CheckAlive and CheckPIDFD when the process behind
// the pidfd has exited; its PID may already belong to another process.
var ErrExited = errors.New("peer: process has exited")

// ErrClosed is returned when the connection, and with it the pidfd, is gone.
var ErrClosed = errors.New("peer: connection closed")

// Info is what the kernel says about the process that connected.
type Info struct {
	// PID, UID and GID come from SO_PEERCRED: the credentials of the process
	// at the time it called connect(2).
	PID int32
	UID uint32
	GID uint32

	// mu guards pidfd: the connection may close (and the fd number be reused
	// by an unrelated file) while a handler still looks at the Info.
	mu    sync.RWMutex
	pidfd int
}

// newInfo takes ownership of pidfd.
func newInfo(pid int32, uid, gid uint32, pidfd int) *Info {
	return &Info{PID: pid, UID: uid, GID: gid, pidfd: pidfd}
}

// CheckAlive reports whether the process that connected still exists. It
// returns ErrExited once that process has exited, even if another process
// now has the same PID, and ErrClosed after the connection has closed.
func (i *Info) CheckAlive() error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if i.pidfd < 0 {
		return ErrClosed
	}
	return CheckPIDFD(i.pidfd)
}

// DupPIDFD returns a duplicate of the caller's pidfd that the caller owns and
// must close. Attestors get a duplicate so that a connection closing in the
// middle of an attestation cannot turn their fd number into someone else's.
func (i *Info) DupPIDFD() (int, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if i.pidfd < 0 {
		return -1, ErrClosed
	}
	return dupCloexec(i.pidfd)
}

// close releases the pidfd; it is safe to call more than once.
func (i *Info) close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.pidfd < 0 {
		return nil
	}
	err := closeFD(i.pidfd)
	i.pidfd = -1
	return err
}

// AuthInfo is the credentials.AuthInfo that the handshake attaches to every
// connection.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Info *Info
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return AuthType }

// FromContext returns the caller's Info from a gRPC server context whose
// connection went through these credentials.
func FromContext(ctx context.Context) (*Info, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p == nil {
		return nil, false
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok || ai.Info == nil {
		return nil, false
	}
	return ai.Info, true
}
