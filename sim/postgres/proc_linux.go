package postgres

import "syscall"

// procAttr runs the server as cred and has the kernel stop it (immediate
// shutdown) if the test binary dies without running its cleanups.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
}
