package mariadb

import "syscall"

// procAttr runs the server as cred and has the kernel kill it if the test
// binary dies without running its cleanups: a throwaway server needs no
// clean shutdown.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
}
