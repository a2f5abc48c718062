// Package systemdtest runs a real systemd user manager ("systemd --user")
// with its own D-Bus for tests and benchmarks of the systemd workload
// attestor, so that the attestor's questions meet systemd's own answers
// and a unit has a real FragmentPath. It needs root, systemd, dbus-daemon
// and unshare; without them it skips through simtest (a failure under
// REQUIRE_SIM=1).
package systemdtest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// UserManager is a real systemd manager ("systemd --user") with its own
// bus, so that the attestor's questions meet systemd's own answers and a
// unit has a real FragmentPath.
//
// It runs without systemd as PID 1: systemd --user refuses to start unless
// /run/systemd/system exists (sd_booted), so it runs in a private mount
// namespace with a tmpfs on /run/systemd that has it; nothing on the host
// changes, and the host's attestor still sees a host without systemd. Its
// cgroup tree is a group of ours (Root), where it places its units as it
// does under user@.service. Its bus is a dbus-daemon that it starts itself
// through a socket unit, as on a real host: the manager only joins a bus
// run by its own dbus.service.
type UserManager struct {
	// Bus is the manager's bus address.
	Bus string
	// UnitDir is where unit files go ($XDG_CONFIG_HOME/systemd/user).
	UnitDir string
	// Root is the manager's cgroup.
	Root *cgrouptest.Group

	conn *dbus.Conn
}

// D-Bus names of systemd's manager (org.freedesktop.systemd1(5)).
const (
	busName       = "org.freedesktop.systemd1"
	managerPath   = dbus.ObjectPath("/org/freedesktop/systemd1")
	getUnit       = "org.freedesktop.systemd1.Manager.GetUnit"
	propertiesGet = "org.freedesktop.DBus.Properties.Get"
)

// The bus as the user manager runs it (dbus-user-session's units, written
// here so that only the dbus-daemon binary is needed).
const (
	dbusSocket = "[Unit]\nDescription=D-Bus User Message Bus Socket\n\n[Socket]\nListenStream=%t/bus\n"
	dbusUnit   = "[Unit]\nDescription=D-Bus User Message Bus\nRequires=dbus.socket\n\n[Service]\nType=notify\nNotifyAccess=main\n" +
		"ExecStart=%s --session --address=systemd: --nofork --nopidfile --systemd-activation\n"
)

// StartUserManager starts systemd --user in the new cgroup rootRel
// (cgrouptest.New) and waits until it owns its bus name. It skips
// (simtest) where systemd or dbus-daemon is not installed.
func StartUserManager(t testing.TB, rootRel string) *UserManager {
	t.Helper()
	simtest.RequireRoot(t)
	sd := "/lib/systemd/systemd"
	if _, err := os.Stat(sd); err != nil {
		simtest.Skip(t, "systemd is not installed (Debian package systemd)")
	}
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		simtest.Skip(t, "dbus-daemon is not installed (Debian package dbus)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		simtest.Skip(t, "unshare is not installed (Debian package util-linux)")
	}
	root := cgrouptest.New(t, rootRel)

	// Not t.TempDir: unix socket paths must stay short.
	dir, err := os.MkdirTemp("", "spirehw-sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	m := &UserManager{Bus: "unix:path=" + filepath.Join(run, "bus"), UnitDir: filepath.Join(dir, "config", "systemd", "user"), Root: root}
	for _, d := range []string{filepath.Join(m.UnitDir, "sockets.target.wants"), run, filepath.Join(dir, "home")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{"dbus.socket": dbusSocket, "dbus.service": strings.Replace(dbusUnit, "%s", daemon, 1)} {
		if err := os.WriteFile(filepath.Join(m.UnitDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../dbus.socket", filepath.Join(m.UnitDir, "sockets.target.wants", "dbus.socket")); err != nil {
		t.Fatal(err)
	}

	// The manager says READY=1 here once its start-up transaction is
	// done, with dbus.socket listening.
	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })

	// The shell joins the manager's cgroup and exec's systemd there.
	script := `set -e
for d in "$@"; do echo $$ > "$d/cgroup.procs"; done
mkdir -p /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir /run/systemd/system
exec ` + sd + ` --user`
	mgr := exec.Command(unshare, append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh"}, root.Dirs...)...)
	mgr.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(dir, "home"),
		"XDG_RUNTIME_DIR=" + run,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"NOTIFY_SOCKET=" + notifyPath,
		"SYSTEMD_LOG_TARGET=console",
		"SYSTEMD_LOG_LEVEL=info",
	}
	logs := &lockedBuffer{}
	mgr.Stdout, mgr.Stderr = logs, logs
	mgr.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = mgr.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM: the manager stops its units (and its bus) and exits,
		// leaving the cgroups empty for cgrouptest to remove.
		_ = mgr.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = mgr.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("systemd --user:\n%s", logs)
		}
	})

	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				ready <- err
				return
			}
			if strings.Contains("\n"+string(buf[:n])+"\n", "\nREADY=1\n") {
				ready <- nil
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-exited:
		t.Fatalf("systemd --user exited during start-up:\n%s", logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("systemd --user did not finish starting:\n%s", logs)
	}

	// Connecting starts dbus.service; the manager joins the bus once that
	// runs.
	conn, err := dbus.Connect(m.Bus)
	if err != nil {
		t.Fatalf("connect to the manager's bus: %v\n%s", err, logs)
	}
	t.Cleanup(func() { conn.Close() })
	m.conn = conn
	owner := make(chan *dbus.Signal, 16)
	conn.Signal(owner)
	defer conn.RemoveSignal(owner)
	if err := conn.AddMatchSignal(dbus.WithMatchInterface("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, busName)); err != nil {
		t.Fatal(err)
	}
	var has bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, busName).Store(&has); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for !has {
		select {
		case s := <-owner:
			if len(s.Body) == 3 && s.Body[0] == busName && s.Body[2] != "" {
				has = true
			}
		case <-exited:
			t.Fatalf("systemd --user exited before joining its bus:\n%s", logs)
		case <-timeout:
			t.Fatalf("systemd --user did not join its bus:\n%s", logs)
		}
	}
	return m
}

// StartService writes a unit file running cmd, starts the unit, waits for
// its start job to finish and returns the unit file's path and the unit's
// main PID.
func (m *UserManager) StartService(t testing.TB, name string, cmd ...string) (string, int) {
	t.Helper()
	path := filepath.Join(m.UnitDir, name)
	unit := "[Unit]\nDescription=spire-hw systemd attestor test\n\n[Service]\nExecStart=" + strings.Join(cmd, " ") + "\n"
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	mgr := m.conn.Object(busName, managerPath)
	if err := mgr.Call("org.freedesktop.systemd1.Manager.Reload", 0).Err; err != nil {
		t.Fatalf("Reload: %v", err)
	}
	// Job signals go to subscribed clients only.
	if err := mgr.Call("org.freedesktop.systemd1.Manager.Subscribe", 0).Err; err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	jobs := make(chan *dbus.Signal, 16)
	m.conn.Signal(jobs)
	defer m.conn.RemoveSignal(jobs)
	if err := m.conn.AddMatchSignal(dbus.WithMatchObjectPath(managerPath), dbus.WithMatchInterface("org.freedesktop.systemd1.Manager"), dbus.WithMatchMember("JobRemoved")); err != nil {
		t.Fatal(err)
	}
	var job dbus.ObjectPath
	if err := mgr.Call("org.freedesktop.systemd1.Manager.StartUnit", 0, name, "replace").Store(&job); err != nil {
		t.Fatalf("StartUnit(%s): %v", name, err)
	}
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case s := <-jobs:
			// JobRemoved(u id, o job, s unit, s result)
			if len(s.Body) == 4 && s.Body[1] == job {
				if r := s.Body[3]; r != "done" {
					t.Fatalf("start job of %s: %v", name, r)
				}
				done = true
			}
		case <-timeout:
			t.Fatalf("start job of %s did not finish", name)
		}
	}
	var unitPath dbus.ObjectPath
	if err := mgr.Call(getUnit, 0, name).Store(&unitPath); err != nil {
		t.Fatal(err)
	}
	var pid dbus.Variant
	if err := m.conn.Object(busName, unitPath).Call(propertiesGet, 0, "org.freedesktop.systemd1.Service", "MainPID").Store(&pid); err != nil {
		t.Fatal(err)
	}
	mainPID, ok := pid.Value().(uint32)
	if !ok || mainPID == 0 {
		t.Fatalf("MainPID of %s = %v", name, pid)
	}
	return path, int(mainPID)
}

// lockedBuffer collects a child's output while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
