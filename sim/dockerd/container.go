package dockerd

import (
	"bytes"
	"context"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// RunOptions is what a test's container differs in.
type RunOptions struct {
	Image  string
	Cmd    []string
	Labels map[string]string
	Env    []string // "K=V"
	// CgroupParent places the container's cgroup, e.g.
	// "/kubepods/besteffort/pod<uid>" as the kubelet's cgroupfs driver does.
	CgroupParent string
	Binds        []string // "host:container[:ro]"
	User         string   // "uid[:gid]"; empty for root
}

// Container is a started container.
type Container struct {
	ID  string
	PID int // its init process, as the host sees it

	d *Daemon
}

// Run creates and starts a container (network "none"), returns once it
// runs, and removes it when the test ends.
func (d *Daemon) Run(tb testing.TB, o RunOptions) *Container {
	tb.Helper()
	id := d.create(tb, o)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := d.Client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		tb.Fatalf("dockerd: start container: %v", err)
	}
	// Start returns once runc has started the init process, so it runs
	// unless it has already exited.
	info, err := d.Client.ContainerInspect(ctx, id)
	if err != nil {
		tb.Fatalf("dockerd: inspect container: %v", err)
	}
	if info.State == nil || !info.State.Running || info.State.Pid == 0 {
		tb.Fatalf("dockerd: container %.12s is not running (%+v); output:\n%s", id, info.State, d.logs(id))
	}
	return &Container{ID: id, PID: info.State.Pid, d: d}
}

// RunToExit runs a container to its end (bounded by a minute) and returns
// its exit code and output (stdout then stderr), and removes it.
func (d *Daemon) RunToExit(tb testing.TB, o RunOptions) (code int, output string) {
	tb.Helper()
	id := d.create(tb, o)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	// Waiting from before the start, so that a fast exit is not missed.
	waitC, errC := d.Client.ContainerWait(ctx, id, container.WaitConditionNextExit)
	if err := d.Client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		tb.Fatalf("dockerd: start container: %v", err)
	}
	select {
	case w := <-waitC:
		if w.Error != nil {
			tb.Fatalf("dockerd: wait for container: %s", w.Error.Message)
		}
		code = int(w.StatusCode)
	case err := <-errC:
		tb.Fatalf("dockerd: wait for container %.12s: %v; output:\n%s", id, err, d.logs(id))
	}
	output = d.logs(id)
	// Now rather than at cleanup, so a test that polls with containers
	// does not pile them up.
	if err := d.Client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
		tb.Errorf("dockerd: remove container %.12s: %v", id, err)
	}
	return code, output
}

// create creates a container from o and schedules its removal.
func (d *Daemon) create(tb testing.TB, o RunOptions) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	resp, err := d.Client.ContainerCreate(ctx,
		&container.Config{Image: o.Image, Cmd: o.Cmd, Labels: o.Labels, Env: o.Env, User: o.User},
		&container.HostConfig{NetworkMode: "none", Binds: o.Binds, Resources: container.Resources{CgroupParent: o.CgroupParent}},
		nil, nil, "")
	if err != nil {
		tb.Fatalf("dockerd: create container: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		if err := d.Client.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("dockerd: remove container %.12s: %v", resp.ID, err)
		}
	})
	return resp.ID
}

// logs is a container's output so far, or why it cannot be read.
func (d *Daemon) logs(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := d.Client.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "(logs: " + err.Error() + ")"
	}
	defer rc.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, rc); err != nil {
		return stdout.String() + stderr.String() + "(logs: " + err.Error() + ")"
	}
	return stdout.String() + stderr.String()
}

// Stop stops the container (SIGTERM, SIGKILL after 10 s) and returns once
// it has exited, so its PID is free for reuse.
func (c *Container) Stop(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	timeout := 10
	if err := c.d.Client.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &timeout}); err != nil {
		tb.Fatalf("dockerd: stop container %.12s: %v", c.ID, err)
	}
	waitC, errC := c.d.Client.ContainerWait(ctx, c.ID, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case err := <-errC:
		tb.Fatalf("dockerd: wait for container %.12s: %v", c.ID, err)
	}
}
