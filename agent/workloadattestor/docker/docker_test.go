package docker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(dockerd.Main(m)) }

const svidClient = "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"

// sleeper runs a container whose init sleeps, with labels and env.
func sleeper(t *testing.T, d *dockerd.Daemon, labels map[string]string, env ...string) (*dockerd.Container, string) {
	t.Helper()
	img := d.Image(t, map[string]string{"/svid-client": svidClient})
	return d.Run(t, dockerd.RunOptions{Image: img, Cmd: []string{"/svid-client", "-sleep"}, Labels: labels, Env: env}), img
}

func newAttestor(t *testing.T, cfg Config) *Attestor {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := sysunix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	return fd
}

func strs(sel []*types.Selector) []string {
	out := make([]string, len(sel))
	for i, s := range sel {
		out[i] = s.Type + ":" + s.Value
	}
	return out
}

// waitLive waits until the attestor is subscribed to the engine's events,
// so that what it inspects from now on may be cached.
func waitLive(t *testing.T, a *Attestor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSelectors: a real container's labels, environment and image, as
// SPIRE spells them, and the second call answered from the cache.
func TestSelectors(t *testing.T) {
	d := dockerd.Start(t)
	c, img := sleeper(t, d, map[string]string{"app": "web", "tier": "a:b"}, "ROLE=front", "EMPTY=")
	a := newAttestor(t, Config{SocketPath: d.Host})
	waitLive(t, a)
	fd := pidfd(t, c.PID)
	sel, err := a.Attest(context.Background(), int32(c.PID), fd)
	if err != nil {
		t.Fatal(err)
	}
	got := strs(sel)
	want := []string{"docker:label:app:web", "docker:label:tier:a:b", "docker:env:ROLE=front", "docker:env:EMPTY=", "docker:image_id:" + img}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("selectors %q lack %q", got, w)
		}
	}
	for _, s := range sel {
		if s.Type != SelectorType {
			t.Errorf("selector %s:%s is not of type docker", s.Type, s.Value)
		}
	}
	if !a.cache.has(c.ID) {
		t.Fatal("a running container's inspect result was not cached")
	}
	again, err := a.Attest(context.Background(), int32(c.PID), fd)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(strs(again)) != fmt.Sprint(got) {
		t.Fatalf("cached answer %q, first answer %q", strs(again), got)
	}
	// With the cache off, nothing is kept.
	off := newAttestor(t, Config{SocketPath: d.Host, CacheSize: -1})
	waitLive(t, off)
	if _, err := off.Attest(context.Background(), int32(c.PID), fd); err != nil || off.cache.has(c.ID) {
		t.Fatalf("CacheSize -1: %v, cached %v", err, off.cache.has(c.ID))
	}
}

// TestNotInContainer: a host process gets no docker selectors and no
// error, as in SPIRE.
func TestNotInContainer(t *testing.T) {
	d := dockerd.Start(t)
	a := newAttestor(t, Config{SocketPath: d.Host})
	sel, err := a.Attest(context.Background(), int32(os.Getpid()), pidfd(t, os.Getpid()))
	if err != nil || len(sel) != 0 {
		t.Fatalf("Attest(host process) = %q, %v; want nothing", strs(sel), err)
	}
}

// TestStopEvicts: the engine's die event removes a container's entry, and
// a process that still claims the container afterwards is answered from
// the engine, never from the entry.
func TestStopEvicts(t *testing.T) {
	d := dockerd.Start(t)
	c, _ := sleeper(t, d, map[string]string{"app": "gone"})
	a := newAttestor(t, Config{SocketPath: d.Host})
	evicted := make(chan string, 16)
	a.cache.mu.Lock()
	a.cache.onEvict = func(id string) { evicted <- id }
	a.cache.mu.Unlock()
	waitLive(t, a)
	if _, err := a.Attest(context.Background(), int32(c.PID), pidfd(t, c.PID)); err != nil {
		t.Fatal(err)
	}
	if !a.cache.has(c.ID) {
		t.Fatal("not cached")
	}
	c.Stop(t)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case id := <-evicted:
			if id != c.ID {
				continue
			}
			if a.cache.has(c.ID) {
				t.Fatal("evicted, yet still cached")
			}
			return
		case <-timer.C:
			t.Fatal("no eviction within 10s of the container's stop")
		}
	}
}

// TestLegacyMatchers: container_id_cgroup_matchers with the new locator
// turned off, as SPIRE requires.
func TestLegacyMatchers(t *testing.T) {
	d := dockerd.Start(t)
	c, _ := sleeper(t, d, map[string]string{"app": "legacy"})
	off := false
	a := newAttestor(t, Config{SocketPath: d.Host, UseNewContainerLocator: &off, ContainerIDCgroupMatchers: []string{"/docker/<id>"}})
	sel, err := a.Attest(context.Background(), int32(c.PID), pidfd(t, c.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strs(sel), "docker:label:app:legacy") {
		t.Fatalf("selectors %q lack the label", strs(sel))
	}
	// A pattern that does not fit docker's layout finds no container.
	b := newAttestor(t, Config{SocketPath: d.Host, UseNewContainerLocator: &off, ContainerIDCgroupMatchers: []string{"/kubepods/*/<id>"}})
	sel, err = b.Attest(context.Background(), int32(c.PID), pidfd(t, c.PID))
	if err != nil || len(sel) != 0 {
		t.Fatalf("non-matching pattern: %q, %v; want nothing", strs(sel), err)
	}
}

func TestConfigErrors(t *testing.T) {
	on := true
	for _, tc := range []struct {
		name string
		cfg  Config
		key  string
		want string
	}{
		{"matchers with the new locator by default", Config{ContainerIDCgroupMatchers: []string{"/docker/<id>"}}, "container_id_cgroup_matchers",
			"the new container locator and custom cgroup matchers cannot both be used"},
		{"matchers with the new locator", Config{UseNewContainerLocator: &on, ContainerIDCgroupMatchers: []string{"/docker/<id>"}}, "container_id_cgroup_matchers",
			"set use_new_container_locator=false"},
		{"bad matcher", Config{UseNewContainerLocator: new(bool), ContainerIDCgroupMatchers: []string{"/docker/*"}}, "container_id_cgroup_matchers",
			`must contain the container id token "<id>" exactly once`},
		{"bad host", Config{SocketPath: "no-scheme"}, "docker_socket_path", "unable to parse docker host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			ce, ok := err.(*ConfigError)
			if !ok || ce.Key != tc.key || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v (%T), want a ConfigError on %s containing %q", err, err, tc.key, tc.want)
			}
		})
	}
}
