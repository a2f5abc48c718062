// Package dockerd starts a private Docker Engine for tests, so that the
// docker and k8s workload attestors meet a real engine, real containers and
// the cgroup paths a real kernel gives them.
//
// The daemon is Debian's dockerd (package docker.io) with its own data root,
// exec root, socket and containerd in a short temporary directory, no
// iptables and no bridge (containers run with network "none"), and the vfs
// storage driver, so it needs no kernel module and leaves nothing behind on
// the host. No registry is reachable: Image builds images with docker import
// from a rootfs holding static Go binaries. Everything goes through the Go
// client, so a test needs nothing but the daemon.
//
// A test binary that calls Main from its TestMain shares one daemon among its
// tests; without Main each test gets, and stops, its own. Tests skip (fail
// under REQUIRE_SIM=1) without root or dockerd.
package dockerd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// Timeouts of the daemon's life cycle; generous, since two CPUs are shared
// with other tests.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 20 * time.Second
	apiTimeout   = 60 * time.Second
)

var (
	mu         sync.Mutex
	mainActive bool
	shared     *Daemon
	sharedErr  error
)

// Main runs the tests of a binary with one shared daemon, started by the
// first Start, and stops it afterwards. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(dockerd.Main(m)) }
func Main(m *testing.M) int {
	mu.Lock()
	mainActive = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		shared = nil
	}
	mu.Unlock()
	return code
}

// Daemon is a running private dockerd.
type Daemon struct {
	// Host is the daemon's address, "unix:///.../docker.sock", as the
	// attestor's docker_socket_path and client.WithHost take it.
	Host string
	// Client talks to the daemon (API version negotiated).
	Client *client.Client

	dir  string
	cmd  *exec.Cmd
	done chan struct{}

	imgMu  sync.Mutex
	images map[string]string // bins key -> image reference
}

// Start returns the binary's shared daemon under Main, else a daemon of the
// test's own, stopped when the test ends. It skips the test (or fails it
// under REQUIRE_SIM=1) without root or dockerd.
func Start(tb testing.TB) *Daemon {
	tb.Helper()
	requireDockerd(tb)
	mu.Lock()
	defer mu.Unlock()
	if !mainActive {
		d, err := startDaemon()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			if err := d.stop(); err != nil {
				tb.Error(err)
			}
		})
		return d
	}
	if shared == nil && sharedErr == nil {
		shared, sharedErr = startDaemon()
	}
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return shared
}

// requireDockerd skips (or fails) a test that cannot start a daemon.
func requireDockerd(tb testing.TB) {
	tb.Helper()
	simtest.RequireRoot(tb)
	if _, err := exec.LookPath("dockerd"); err != nil {
		simtest.Skip(tb, "dockerd not found (install docker.io: make deps)")
	}
}

// Dir is the daemon's private directory (data root, exec root, socket and
// log), for a test that needs to look at what the daemon did.
func (d *Daemon) Dir() string { return d.dir }

// Log is the daemon's output so far (dockerd's and its containerd's).
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	return string(b)
}

// startDaemon starts dockerd with the package's flags and extra ones.
func startDaemon(extra ...string) (*Daemon, error) {
	// Short, because containerd's sockets live under the exec root and a
	// Unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("/tmp", "dk")
	if err != nil {
		return nil, fmt.Errorf("dockerd: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("dockerd: %w", err)
	}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("dockerd: %w", err)
	}
	defer logf.Close()
	sock := filepath.Join(dir, "docker.sock")
	ns := filepath.Base(dir)
	args := []string{
		// An own config file, so /etc/docker/daemon.json of the host
		// cannot change what the tests run on.
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", "unix://" + sock,
		"--iptables=false", "--ip6tables=false", "--bridge=none",
		"--storage-driver=vfs",
		// dockerd uses a system containerd when one runs; own namespaces
		// keep this daemon's containers apart from other daemons' there.
		"--containerd-namespace", "moby-" + ns,
		"--containerd-plugins-namespace", "plugins-" + ns,
	}
	cmd := exec.Command("dockerd", append(args, extra...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// A process group of its own (a terminal's Ctrl-C reaches only the
	// test), and SIGTERM from the kernel, which makes it stop its
	// containers, if the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	d := &Daemon{Host: "unix://" + sock, dir: dir, cmd: cmd, done: make(chan struct{}), images: map[string]string{}}

	// The kernel's parent-death signal follows the thread that started the
	// child, not the process: the thread is kept for the daemon's life, so
	// it cannot exit early and stop a healthy daemon mid-test.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait() // the log says why it ended
		close(d.done)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("dockerd: start: %w", err)
	}

	c, err := client.NewClientWithOpts(client.WithHost(d.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		_ = d.stop()
		return nil, fmt.Errorf("dockerd: client: %w", err)
	}
	d.Client = c
	if err := d.waitReady(); err != nil {
		log := lastLines(d.Log(), 20)
		if serr := d.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, fmt.Errorf("%w\n--- dockerd log:\n%s", err, log)
	}
	return d, nil
}

// waitReady polls Ping until the daemon answers, exits, or startTimeout
// passes.
func (d *Daemon) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("dockerd exited during start-up (%v)", d.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.Client.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd not ready after %v: %w", startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop removes every container, stops dockerd (and with it its
// containerd), kills whatever of theirs survived, unmounts what they left
// mounted and removes the directory. It reports what it could not undo.
func (d *Daemon) stop() error {
	var errs []error
	containerdPID := d.readPID(filepath.Join("exec", "containerd", "containerd.pid"))
	if d.Client != nil {
		if err := d.removeAll(); err != nil {
			errs = append(errs, err)
		}
		d.Client.Close()
	}
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(stopTimeout):
			_ = d.cmd.Process.Kill()
			<-d.done
			errs = append(errs, fmt.Errorf("dockerd: did not stop within %v of SIGTERM, killed", stopTimeout))
		}
	}
	// dockerd stops its containerd itself; this is for a dockerd that was
	// killed, or one that died.
	if containerdPID > 0 {
		terminate(containerdPID, d.dir)
	}
	for _, pid := range processesUnder(d.dir) {
		terminate(pid, d.dir)
	}
	if err := unmountUnder(d.dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, fmt.Errorf("dockerd: remove %s: %w", d.dir, err))
	}
	return errors.Join(errs...)
}

// removeAll force-removes every container of the daemon, running or not.
func (d *Daemon) removeAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	list, err := d.Client.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		select {
		case <-d.done:
			return nil // nothing to ask; the sweep below cleans up
		default:
		}
		return fmt.Errorf("dockerd: list containers: %w", err)
	}
	var errs []error
	for _, c := range list {
		if err := d.Client.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("dockerd: remove container %s: %w", c.ID, err))
		}
	}
	return errors.Join(errs...)
}

// readPID reads a pid file under the daemon's directory (0 if none).
func (d *Daemon) readPID(rel string) int {
	b, err := os.ReadFile(filepath.Join(d.dir, rel))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// processesUnder lists the processes whose command line names dir: the
// daemon's containerd and shims pass paths under it.
func processesUnder(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if namesDir(pid, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func namesDir(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, arg := range strings.Split(string(b), "\x00") {
		if arg == dir || strings.HasPrefix(arg, dir+"/") || strings.Contains(arg, "://"+dir+"/") {
			return true
		}
	}
	return false
}

// terminate stops pid with SIGTERM, then SIGKILL, as long as its command
// line still names dir (so a recycled PID is never signalled). The process
// is not our child, so its end is seen by polling.
func terminate(pid int, dir string) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !namesDir(pid, dir) {
			return
		}
		_ = syscall.Kill(pid, sig)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if !namesDir(pid, dir) {
				return
			}
		}
	}
}

// unmountUnder detaches every mount at or below dir, deepest first (the
// shm and network-namespace mounts of containers the daemon did not get
// to clean up).
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("dockerd: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("dockerd: unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
