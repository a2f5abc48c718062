package simtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// ErrPIDTaken reports that a task other than the command took the wanted
// PID for good, typically a runtime thread of this very process created
// between the write to ns_last_pid and the fork. Nothing will free it: the
// caller must start again with a new victim process.
var ErrPIDTaken = errors.New("the wanted PID was taken by another task")

// StartWithPID starts the command newCmd returns so that it gets pid, which
// must be free, by setting ns_last_pid just below it. The caller must be
// root in its own PID namespace, where nothing else forks. Tries that miss
// are killed and reaped, and newCmd is called for each try.
func StartWithPID(pid int, newCmd func() *exec.Cmd) (*exec.Cmd, error) {
	for range 100 {
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
			return nil, fmt.Errorf("pid %d (%s): %w", pid, holder(st), ErrPIDTaken)
		}
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			return nil, fmt.Errorf("write ns_last_pid: %w", err)
		}
		cmd := newCmd()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		if cmd.Process.Pid == pid {
			return cmd, nil
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return nil, fmt.Errorf("pid %d: no fork got it in 100 tries", pid)
}

// holder names the task in a /proc status file, to say in failures who
// took a PID.
func holder(status []byte) string {
	var name, tgid string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			name = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			tgid = strings.TrimSpace(v)
		}
	}
	return name + ", thread group " + tgid
}
