package lineage

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"golang.org/x/sys/unix"
)

func startTracer(t *testing.T, opts Options) *Tracer {
	t.Helper()
	simtest.RequireRoot(t)
	if err := Supported(); err != nil {
		simtest.Skip(t, err.Error())
	}
	tr, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func lookup(t *testing.T, tr *Tracer, fd int) Process {
	t.Helper()
	key, err := KeyOf(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, ok := tr.Table().Lookup(key)
	if !ok {
		t.Fatalf("key %+v not in the table", key)
	}
	return p
}

// TestTracerMatchesProc checks that a traced process, and one that ran
// before the tracer, are described as /proc describes them.
func TestTracerMatchesProc(t *testing.T) {
	before := exec.Command("sleep", "30")
	if err := before.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { before.Process.Kill(); _ = before.Wait() }()

	tr := startTracer(t, Options{Table: TableOptions{Grace: 200 * time.Millisecond}})
	after := exec.Command("/bin/sh", "-c", "exec sleep 30")
	if err := after.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { after.Process.Kill(); _ = after.Wait() }()
	// Wait for the shell to become sleep.
	for range 100 {
		if c, _ := os.ReadFile("/proc/" + strconv.Itoa(after.Process.Pid) + "/comm"); string(c) == "sleep\n" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, cmd := range map[string]*exec.Cmd{"started before": before, "started after": after} {
		fd := pidfd(t, cmd.Process.Pid)
		got := lookup(t, tr, fd)
		want, err := ReadProc(int32(cmd.Process.Pid), fd)
		if err != nil {
			t.Fatal(err)
		}
		if got.Exe.FileID != want.Exe.FileID || got.Exe.Path != want.Exe.Path || got.EUID != want.EUID || got.CgroupID != want.CgroupID {
			t.Errorf("%s: table %+v, /proc %+v", name, got, want)
		}
		if name == "started after" && got.FromProc {
			t.Errorf("%s: entry came from /proc, not from the tracer", name)
		}
		if len(got.Ancestors) == 0 || got.Ancestors[0].Exe.Path != self {
			t.Errorf("%s: parent %v, want %s", name, got.Ancestors, self)
		}
	}

	// Exit: kept for the grace period, then dropped.
	fd := pidfd(t, after.Process.Pid)
	key, _ := KeyOf(fd)
	after.Process.Kill()
	_ = after.Wait()
	if err := tr.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p, ok := tr.Table().Lookup(key); !ok || !p.Exited {
		t.Fatalf("just exited: %+v %v, want an exited entry", p, ok)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := tr.Table().Lookup(key); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("exited process never dropped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := tr.Drops(); d != 0 {
		t.Fatalf("%d ring-buffer drops", d)
	}
}

// TestTracerMemfdExec checks that a program executed from a memfd is marked
// unlinked with the path /proc shows.
func TestTracerMemfdExec(t *testing.T) {
	tr := startTracer(t, Options{})
	b, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	mfd, err := unix.MemfdCreate("lineage-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(mfd), "memfd")
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/fd/3", "30")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(100 * time.Millisecond)
	fd := pidfd(t, cmd.Process.Pid)
	got := lookup(t, tr, fd)
	want, err := ReadProc(int32(cmd.Process.Pid), fd)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Exe.Unlinked || got.Exe.Path != want.Exe.Path {
		t.Fatalf("memfd exec: table %+v, /proc path %q", got.Exe, want.Exe.Path)
	}
}
