package plugin

import (
	"os/exec"
	"syscall"
)

// pluginCmd runs the plugin so that the kernel kills it if the daemon dies
// without closing it (kill -9): no plugin outlives its host.
func pluginCmd(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}
