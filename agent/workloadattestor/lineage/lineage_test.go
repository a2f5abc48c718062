package lineage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	tracer "github.com/spiffe-hw/spire-hw/ebpf/lineage"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

const helperEnv = "LINEAGE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "pidreuse":
		if err := pidReuse(); err != nil {
			fmt.Println("PIDREUSE FAIL:", err)
			os.Exit(1)
		}
		fmt.Println("PIDREUSE OK")
		os.Exit(0)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEBPF(t testing.TB, cfg Config) *Attestor {
	t.Helper()
	simtest.RequireRoot(t)
	if err := tracer.Supported(); err != nil {
		simtest.Skip(t, err.Error())
	}
	cfg.Log = quiet()
	a := New(cfg)
	t.Cleanup(func() { a.Close() })
	if a.Mode() != "ebpf" {
		t.Fatal("eBPF tracer did not start on a machine that supports it")
	}
	return a
}

func start(t testing.TB, name string, args ...string) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); _ = cmd.Wait() })
	fd, err := sysunix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	// Let exec complete.
	want := filepath.Base(name)
	for range 200 {
		if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); strings.TrimSpace(string(c)) == want[:min(len(want), 15)] {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd, fd
}

func strs(sel []*types.Selector) []string {
	out := make([]string, 0, len(sel))
	for _, s := range sel {
		out = append(out, s.Type+":"+s.Value)
	}
	return out
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestMatchesUnixAttestor: for a process started before the agent and one
// started after, in both modes, the unix selectors are the unix attestor's
// and the lineage ones name the test binary as parent.
func TestMatchesUnixAttestor(t *testing.T) {
	before, beforeFD := start(t, "/bin/sleep", "30")
	cfg := Config{DiscoverWorkloadPath: true}
	modes := map[string]*Attestor{"ebpf": newEBPF(t, cfg)}
	pcfg := cfg
	pcfg.DisableEBPF, pcfg.Log = true, quiet()
	modes["procfs"] = New(pcfg)
	after, afterFD := start(t, "/bin/sleep", "30")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ua := unix.New(unix.Config{DiscoverWorkloadPath: true})
	for mode, a := range modes {
		for name, c := range map[string]struct {
			cmd *exec.Cmd
			fd  int
		}{"before": {before, beforeFD}, "after": {after, afterFD}} {
			pid := int32(c.cmd.Process.Pid)
			want, err := ua.Attest(context.Background(), pid, c.fd)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(context.Background(), pid, c.fd)
			if err != nil {
				t.Fatalf("%s/%s: %v", mode, name, err)
			}
			g := strs(got)
			for _, w := range strs(want) {
				if !slices.Contains(g, w) {
					t.Errorf("%s/%s: missing %q in %v", mode, name, w, g)
				}
			}
			for _, w := range []string{"lineage:parent:path:" + self, "lineage:ancestor:path:" + self, "lineage:parent:sha256:" + fileHash(t, self)} {
				if !slices.Contains(g, w) {
					t.Errorf("%s/%s: missing %q in %v", mode, name, w, g)
				}
			}
			if !slices.ContainsFunc(g, func(s string) bool { return strings.HasPrefix(s, "lineage:cgroup:/") }) {
				t.Errorf("%s/%s: no cgroup selector in %v", mode, name, g)
			}
		}
	}
}

// TestReplacedBinary: a binary replaced on disk after exec gives the hash of
// what was executed, or none; never the new file's.
func TestReplacedBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "workload")
	orig, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	origHash := fileHash(t, bin)
	newBin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	newHash := fmt.Sprintf("%x", sha256.Sum256(newBin))

	cfg := Config{DiscoverWorkloadPath: true}
	check := func(t *testing.T, a *Attestor, cmd *exec.Cmd, fd int, allowNone bool) {
		t.Helper()
		sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd)
		if err != nil {
			t.Fatal(err)
		}
		g := strs(sel)
		if slices.Contains(g, "unix:sha256:"+newHash) {
			t.Fatalf("hash of the replacement file: %v", g)
		}
		if !slices.Contains(g, "unix:sha256:"+origHash) && !(allowNone && !slices.ContainsFunc(g, func(s string) bool { return strings.HasPrefix(s, "unix:sha256:") })) {
			t.Fatalf("want the executed file's hash %s: %v", origHash, g)
		}
	}

	t.Run("renamed over", func(t *testing.T) {
		cmd, fd := start(t, bin, "30")
		tmp := bin + ".new"
		if err := os.WriteFile(tmp, newBin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
		// A fresh attestor has no cached hash: it must find the executed
		// file, not the one now at the path.
		check(t, newEBPF(t, cfg), cmd, fd, false)
	})
	t.Run("written in place", func(t *testing.T) {
		if err := os.WriteFile(bin, orig, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd, fd := start(t, bin, "30")
		a := newEBPF(t, cfg)
		f, err := os.OpenFile(bin, os.O_WRONLY|os.O_TRUNC, 0)
		if errors.Is(err, syscall.ETXTBSY) {
			t.Log("kernel refuses writes to a running binary; checking the untouched case")
			check(t, a, cmd, fd, false)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(newBin)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		check(t, a, cmd, fd, true)
	})
}

// TestDeadCallerRefused: an exited caller gets nothing, even though its
// entry is still in the table for the grace period.
func TestDeadCallerRefused(t *testing.T) {
	a := newEBPF(t, Config{})
	cmd, fd := start(t, "/bin/sleep", "30")
	if _, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	_ = cmd.Wait()
	if sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd); err == nil {
		t.Fatalf("dead caller attested: %v", strs(sel))
	}
}

// TestPIDReuse re-executes the test binary as PID 1 of a new PID namespace
// (see pidReuse).
func TestPIDReuse(t *testing.T) {
	simtest.RequireRoot(t)
	if err := tracer.Supported(); err != nil {
		simtest.Skip(t, err.Error())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=pidreuse")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("helper output:\n%s", out)
	if err != nil || !strings.Contains(string(out), "PIDREUSE OK") {
		t.Fatalf("helper failed: %v", err)
	}
}

const reusedUID = 4321

// pidReuse runs as PID 1 of a fresh namespace: caller A (uid 0) is attested,
// killed and reaped; B (uid 4321) is made to take A's PID through
// ns_last_pid. Attesting with A's pidfd must fail, never yield B's identity;
// B's own pidfd must yield uid 4321.
func pidReuse() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("not PID 1 (pid %d)", os.Getpid())
	}
	if err := sysunix.Mount("", "/", "", sysunix.MS_REC|sysunix.MS_PRIVATE, ""); err != nil {
		return err
	}
	if err := sysunix.Mount("proc", "/proc", "proc", sysunix.MS_NOSUID|sysunix.MS_NODEV|sysunix.MS_NOEXEC, ""); err != nil {
		return err
	}
	for _, mode := range []bool{false, true} {
		a := New(Config{DisableEBPF: mode, Log: quiet(), DiscoverWorkloadPath: true})
		if !mode && a.Mode() != "ebpf" {
			return errors.New("tracer did not start in the namespace")
		}
		// A runtime thread may take A's PID before B does; then only a
		// new A helps.
		var err error
		for range 5 {
			if err = reuseOnce(a); !errors.Is(err, simtest.ErrPIDTaken) {
				break
			}
		}
		a.Close()
		if err != nil {
			return fmt.Errorf("%s mode: %w", a.Mode(), err)
		}
		fmt.Printf("%s mode: reused PID refused\n", a.Mode())
	}
	return nil
}

func reuseOnce(a *Attestor) error {
	ctx := context.Background()
	A := exec.Command("sleep", "60")
	if err := A.Start(); err != nil {
		return err
	}
	pid := A.Process.Pid
	fdA, err := sysunix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer sysunix.Close(fdA)
	time.Sleep(20 * time.Millisecond)
	if _, err := a.Attest(ctx, int32(pid), fdA); err != nil {
		return fmt.Errorf("attest live A: %w", err)
	}
	A.Process.Kill()
	_ = A.Wait()

	B, err := simtest.StartWithPID(pid, func() *exec.Cmd {
		B := exec.Command("sleep", "60")
		B.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: reusedUID, Gid: reusedUID}}
		return B
	})
	if err != nil {
		return err
	}
	defer func() { B.Process.Kill(); _ = B.Wait() }()
	time.Sleep(20 * time.Millisecond)

	if sel, err := a.Attest(ctx, int32(pid), fdA); err == nil {
		return fmt.Errorf("A's pidfd attested after A exited: %v", strs(sel))
	}
	fdB, err := sysunix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer sysunix.Close(fdB)
	sel, err := a.Attest(ctx, int32(pid), fdB)
	if err != nil {
		return fmt.Errorf("attest B: %w", err)
	}
	if !slices.Contains(strs(sel), "unix:uid:"+strconv.Itoa(reusedUID)) {
		return fmt.Errorf("B (pid %d reused) attested as %v", pid, strs(sel))
	}
	return nil
}

// TestExecJustBefore: a process that executes a new program and asks at
// once is attested as the new program, although the kernel has not woken
// the tracer for the exec event: never as the program it ran before (here
// the shell that execs it).
func TestExecJustBefore(t *testing.T) {
	a := newEBPF(t, Config{DiscoverWorkloadPath: true})
	yes, err := filepath.EvalSymlinks("/usr/bin/yes")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		cmd := exec.Command("/bin/sh", "-c", "read x; exec "+yes)
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		r, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		fd, err := sysunix.PidfdOpen(cmd.Process.Pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The shell is in the table before it execs.
		time.Sleep(150 * time.Millisecond)
		if _, err := w.Write([]byte("\n")); err != nil {
			t.Fatal(err)
		}
		// yes has written: it runs its own code, its exec is complete.
		if _, err := r.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		sel, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd)
		cmd.Process.Kill()
		_ = cmd.Wait()
		sysunix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if g := strs(sel); !slices.Contains(g, "unix:path:"+yes) || !slices.Contains(g, "unix:sha256:"+fileHash(t, yes)) {
			t.Fatalf("round %d: a process that just executed %s is attested as %v", i, yes, g)
		}
	}
}
