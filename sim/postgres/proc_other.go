//go:build !linux

package postgres

import "syscall"

// procAttr runs the server as cred.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}

// killTree kills the postmaster pid; its backends end when they notice.
func killTree(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }
