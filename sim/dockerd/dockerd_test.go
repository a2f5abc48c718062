package dockerd

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

const svidClient = "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"

// TestRunWithLabelAndCgroupParent: an imported image runs; the container
// carries its labels, its PID is a host process in the container's cgroup
// (docker's default parent, or the one given), and Stop ends it.
func TestRunWithLabelAndCgroupParent(t *testing.T) {
	d := Start(t)
	img := d.Image(t, map[string]string{"/bin/svid-client": svidClient})
	if again := d.Image(t, map[string]string{"/bin/svid-client": svidClient}); again != img {
		t.Fatalf("the same binaries gave two images, %s and %s", img, again)
	}

	c := d.Run(t, RunOptions{Image: img, Cmd: []string{"/bin/svid-client", "-sleep"}, Labels: map[string]string{"app": "x"}})
	info, err := d.Client.ContainerInspect(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Labels["app"] != "x" {
		t.Errorf("labels = %v, want app=x", info.Config.Labels)
	}
	if info.HostConfig.NetworkMode != "none" {
		t.Errorf("network mode = %q, want none", info.HostConfig.NetworkMode)
	}
	assertCgroup(t, c, `/docker/`+c.ID)

	parent := "/kubepods/besteffort/pod0c2b4f6e-5d1a-4c7e-9f3b-2a8d6e1f4b7c"
	k := d.Run(t, RunOptions{Image: img, Cmd: []string{"/bin/svid-client", "-sleep"}, CgroupParent: parent})
	assertCgroup(t, k, parent+"/"+k.ID)

	c.Stop(t)
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(c.PID))); err == nil && cmdline(c.PID) == "/bin/svid-client\x00-sleep\x00" {
		t.Errorf("process %d still runs after Stop", c.PID)
	}
	info, err = d.Client.ContainerInspect(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Running || info.State.ExitCode != 0 {
		t.Errorf("after Stop: running %v, exit code %d (want a clean exit on SIGTERM)", info.State.Running, info.State.ExitCode)
	}
}

// TestRunToExit: a container's exit code and output come back; the test
// client reports an unreachable socket as an error with exit 1.
func TestRunToExit(t *testing.T) {
	d := Start(t)
	img := d.Image(t, map[string]string{"/bin/svid-client": svidClient})
	code, out := d.RunToExit(t, RunOptions{Image: img, Cmd: []string{"/bin/svid-client", "-socket", "/nonexistent.sock", "-timeout", "2s"}})
	if code != 1 || !strings.Contains(out, "rpc error") {
		t.Fatalf("exit %d, output %q; want 1 and a gRPC error", code, out)
	}
}

// TestStopCleansUp: a daemon of its own (not the shared one) stops with its
// containers running and leaves no process, mount or directory behind.
func TestStopCleansUp(t *testing.T) {
	requireDockerd(t)
	mu.Lock()
	d, err := startDaemon()
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	img := d.Image(t, map[string]string{"/svid-client": svidClient})
	// Not Run: its cleanup would remove the container before the daemon
	// stop this test checks.
	ctx := context.Background()
	resp, err := d.Client.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"/svid-client", "-sleep"}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Client.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := d.Client.ContainerInspect(ctx, resp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if cmdline(info.State.Pid) == "/svid-client\x00-sleep\x00" {
		t.Errorf("the container's process %d outlived the daemon", info.State.Pid)
	}
	if pids := processesUnder(d.dir); len(pids) > 0 {
		t.Errorf("processes of the daemon left: %v", pids)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), d.dir) {
		t.Errorf("mounts under %s left", d.dir)
	}
	if _, err := os.Stat(d.dir); !os.IsNotExist(err) {
		t.Errorf("directory %s left: %v", d.dir, err)
	}
}

func assertCgroup(t *testing.T, c *Container, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.PID), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^\d+:[^:]*:(.*)$`)
	found := false
	for _, m := range line.FindAllStringSubmatch(string(b), -1) {
		if m[1] == want {
			found = true
		}
	}
	if !found {
		t.Errorf("process %d is not in cgroup %s:\n%s", c.PID, want, b)
	}
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return string(b)
}

// TestStartFailureShowsLog: a daemon that cannot start is reported with
// its own words.
func TestStartFailureShowsLog(t *testing.T) {
	requireDockerd(t)
	_, err := startDaemon("--no-such-flag")
	if err == nil || !strings.Contains(err.Error(), "dockerd log") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("err = %v, want the start failure with dockerd's log", err)
	}
}
