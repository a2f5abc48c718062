package systemd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/simtest"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/systemd/systemdtest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/workloadattestortest"
)

func randName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "spirehw-test-" + hex.EncodeToString(b)
}

func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		simtest.Skip(t, "pidfd_open unavailable: "+err.Error())
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func render(sel []*types.Selector) []string {
	var out []string
	for _, s := range sel {
		out = append(out, s.Type+":"+s.Value)
	}
	slices.Sort(out)
	return out
}

func sleeper() *exec.Cmd { return exec.Command("sleep", "600") }

// TestAttestNoSystemd attests processes in real cgroups named as systemd
// names them, with no systemd to ask: the unit comes from the cgroup alone.
func TestAttestNoSystemd(t *testing.T) {
	name := randName(t)
	a := &Attestor{procDir: "/proc"} // no bus, whatever this host runs
	for _, tc := range []struct {
		label, rel, want, err string
	}{
		{"Service", "system.slice/" + name + ".service", "systemd:id:" + name + ".service", ""},
		{"InstanceInNestedSlice", "system.slice/system-" + name + ".slice/" + name + "@x.service", "systemd:id:" + name + "@x.service", ""},
		{"DelegatedSubtree", "system.slice/" + name + "-d.service/payload/sshd.service", "systemd:id:" + name + "-d.service", ""},
		{"SliceOnly", name + ".slice", "", "in no systemd unit"},
		{"NotAUnit", name + "/docker", "", "in no systemd unit"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			g := cgrouptest.New(t, tc.rel)
			cmd := sleeper()
			g.Start(t, cmd)
			sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), pidfd(t, cmd.Process.Pid))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Attest = %v, %v; want error %q", render(sel), err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := render(sel); len(got) != 1 || got[0] != tc.want {
				t.Errorf("Attest = %q, want [%s]", got, tc.want)
			}
		})
	}
}

// TestAttestExited refuses a caller that has exited and been reaped,
// whose PID any process may hold by now.
func TestAttestExited(t *testing.T) {
	g := cgrouptest.New(t, "system.slice/"+randName(t)+".service")
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.Add(t, cmd.Process.Pid)
	fd := pidfd(t, cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	a := &Attestor{procDir: "/proc"}
	sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd)
	if err == nil {
		t.Fatalf("Attest(reaped pid) = %v", render(sel))
	}
	if !errors.Is(err, peer.ErrExited) && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Attest(reaped pid) = %v, want peer.ErrExited or a missing /proc entry", err)
	}
}

// TestAttestUserManager asks a real systemd manager about a unit it runs,
// and about a cgroup named like a unit that it never made.
func TestAttestUserManager(t *testing.T) {
	name := randName(t)
	m := systemdtest.StartUserManager(t, "system.slice/"+name+"-mgr.slice")
	unitName := name + ".service"
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	fragment, pid := m.StartService(t, unitName, sleep, "600")

	a := New(Config{BusAddress: m.Bus})
	t.Cleanup(func() { _ = a.Close() })
	fd := pidfd(t, pid)
	sel, err := a.Attest(context.Background(), int32(pid), fd)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"systemd:fragment_path:" + fragment, "systemd:id:" + unitName}
	if got := render(sel); !slices.Equal(got, want) {
		t.Errorf("Attest(MainPID of %s) = %q, want %q", unitName, got, want)
	}

	t.Run("UnitNotLoaded", func(t *testing.T) {
		// A cgroup named like a unit, made by us and not by systemd.
		g := cgrouptest.New(t, "system.slice/"+name+"-fake.service")
		cmd := sleeper()
		g.Start(t, cmd)
		sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), pidfd(t, cmd.Process.Pid))
		if !errors.Is(err, ErrNotLoaded) {
			t.Fatalf("Attest(process in a hand-made unit cgroup) = %v, %v; want ErrNotLoaded", render(sel), err)
		}
	})

	t.Run("NotAUnit", func(t *testing.T) {
		// A cgroup no unit made ("/docker/<id>" of a cgroupfs runtime) is
		// in the root slice, as systemd's GetUnitByPID, which SPIRE asks,
		// says: the caller gets that slice's selectors, not an error.
		g := cgrouptest.New(t, name+"-raw/docker")
		cmd := sleeper()
		g.Start(t, cmd)
		sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), pidfd(t, cmd.Process.Pid))
		if got := render(sel); err != nil || !slices.Contains(got, "systemd:id:-.slice") {
			t.Fatalf("Attest(process in a cgroup no unit made) = %q, %v; want systemd:id:-.slice", got, err)
		}
	})

	t.Run("Conformance", func(t *testing.T) {
		// The test process joins the unit's own cgroup, so the suite's
		// caller is in a unit the manager has loaded, and the answers
		// come from systemd. It leaves again (Enter's cleanup) before the
		// manager stops the unit, which kills what is in it.
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		cgs, err := containerinfo.ParseCgroups(raw)
		if err != nil {
			t.Fatal(err)
		}
		p, err := systemdPath(cgs)
		if err != nil {
			t.Fatal(err)
		}
		cgrouptest.Existing(t, p).Enter(t)
		workloadattestortest.Run(t, SelectorType, func(t *testing.T) workloadapi.Attestor {
			a := New(Config{BusAddress: m.Bus})
			t.Cleanup(func() { _ = a.Close() })
			return a
		})
		self, err := a.Attest(context.Background(), int32(os.Getpid()), pidfd(t, os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		if got := render(self); !slices.Equal(got, want) {
			t.Errorf("Attest(test process in %s's cgroup) = %q, want %q", unitName, got, want)
		}
	})

	t.Run("Reconnects", func(t *testing.T) {
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		sel, err := a.Attest(context.Background(), int32(pid), fd)
		if err != nil || len(sel) != 2 {
			t.Fatalf("Attest after Close = %v, %v", render(sel), err)
		}
	})
}

// TestAttestBusUnresponsive: a bus that accepts and then says nothing, or
// says garbage, fails the call in bounded time.
func TestAttestBusUnresponsive(t *testing.T) {
	g := cgrouptest.New(t, "system.slice/"+randName(t)+".service")
	cmd := sleeper()
	g.Start(t, cmd)
	fd := pidfd(t, cmd.Process.Pid)

	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"Silent", func(c net.Conn) { _, _ = c.Read(make([]byte, 4096)) }},
		{"Garbage", func(c net.Conn) { _, _ = c.Write(bytes.Repeat([]byte("\x00garbage\r\n"), 100)) }},
		{"Hangup", func(c net.Conn) { c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "bus")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						tc.serve(c)
						// Hold the connection until the listener goes.
						_, _ = c.Read(make([]byte, 1))
					}()
				}
			}()
			a := New(Config{BusAddress: "unix:path=" + sock, Log: slog.New(slog.DiscardHandler)})
			t.Cleanup(func() { _ = a.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			sel, err := a.Attest(ctx, int32(cmd.Process.Pid), fd)
			if err == nil {
				t.Fatalf("Attest through a broken bus = %v", render(sel))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Attest took %v", d)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestNewLogsOnce: without systemd, New says so once; calls say nothing.
func TestNewLogsOnce(t *testing.T) {
	if Booted() {
		t.Skip("systemd runs here: the attestor asks it")
	}
	var buf bytes.Buffer
	a := New(Config{Log: slog.New(slog.NewTextHandler(&buf, nil))})
	g := cgrouptest.New(t, "system.slice/"+randName(t)+".service")
	cmd := sleeper()
	g.Start(t, cmd)
	fd := pidfd(t, cmd.Process.Pid)
	for range 3 {
		if _, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), "systemd is not running here") {
		t.Fatalf("log after New and 3 calls (%d lines):\n%s", n, buf.String())
	}
}
