// Package peercred reads the credentials of the process at the other end
// of a Unix socket (SO_PEERCRED): the agent keys its Workload API caps and
// identifies callers by them, and the server puts them in its audit lines.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Read returns the pid, uid and gid the kernel recorded when c's peer
// called connect(2). c must be a Unix socket (or wrap one and implement
// syscall.Conn). The uid and gid are as seen from this process's user
// namespace: every uid-0 process of containers without a user namespace of
// their own reads as 0.
func Read(c net.Conn) (*unix.Ucred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("SO_PEERCRED: %T is not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	var (
		u      *unix.Ucred
		optErr error
	)
	if err := rc.Control(func(fd uintptr) {
		u, optErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if optErr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", optErr)
	}
	if u == nil {
		return nil, errors.New("SO_PEERCRED: no credentials")
	}
	return u, nil
}
