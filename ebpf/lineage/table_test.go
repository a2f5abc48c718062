package lineage

import (
	"slices"
	"testing"
	"time"
)

func exe(path string, ino uint64) Exe {
	return Exe{FileID: FileID{Dev: 1, Ino: ino, CtimeSec: 10, Size: 100}, Path: path}
}

func paths(p Process) []string {
	var out []string
	for _, a := range p.Ancestors {
		out = append(out, a.Exe.Path)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestTable(opts TableOptions) (*Table, *clock) {
	t := NewTable(opts)
	c := &clock{t: time.Unix(1000, 0)}
	t.now = c.now
	return t, c
}

func k(i uint64) Key { return Key{Ino: i} }

func TestTableLineageSurvivesAncestorsExit(t *testing.T) {
	tb, clk := newTestTable(TableOptions{Grace: time.Second})
	tb.seed([]Process{{Key: k(1), PID: 1, Exe: exe("/sbin/init", 1)}})
	tb.fork(Process{Key: k(2), PID: 20, PPID: 1, Parent: k(1)})
	tb.exec(Process{Key: k(2), PID: 20, PPID: 1, Parent: k(1), Exe: exe("/bin/sh", 2)})
	tb.fork(Process{Key: k(3), PID: 30, PPID: 20, Parent: k(2)})
	if p, _ := tb.Lookup(k(3)); p.Exe.Path != "/bin/sh" {
		t.Fatalf("forked child runs %q, want its parent's /bin/sh", p.Exe.Path)
	}
	// The shell exits and is forgotten before its child executes.
	tb.exit(k(2))
	clk.t = clk.t.Add(2 * time.Second)
	tb.expire()
	if _, ok := tb.Lookup(k(2)); ok {
		t.Fatal("exited process kept past the grace period")
	}
	// The kernel now reports init as the parent (re-parenting).
	tb.exec(Process{Key: k(3), PID: 30, PPID: 1, Parent: k(1), Exe: exe("/usr/bin/app", 3)})
	p, ok := tb.Lookup(k(3))
	if !ok || !equal(paths(p), []string{"/bin/sh", "/sbin/init"}) || p.PPID != 20 {
		t.Fatalf("lineage after parent exit: %v (ppid %d), want [/bin/sh /sbin/init] from pid 20", paths(p), p.PPID)
	}
}

func TestTableExecFreezesParentState(t *testing.T) {
	tb, _ := newTestTable(TableOptions{})
	tb.seed([]Process{{Key: k(1), PID: 1, Exe: exe("/sbin/init", 1)}})
	tb.fork(Process{Key: k(2), PID: 2, Parent: k(1)})
	tb.exec(Process{Key: k(2), PID: 2, Parent: k(1), Exe: exe("/bin/launcher", 2)})
	tb.fork(Process{Key: k(3), PID: 3, Parent: k(2)})
	tb.exec(Process{Key: k(3), PID: 3, Parent: k(2), Exe: exe("/bin/worker", 3)})
	// The parent executes something else afterwards: the child keeps what
	// its parent was when the child executed.
	tb.exec(Process{Key: k(2), PID: 2, Parent: k(1), Exe: exe("/bin/other", 4)})
	p, _ := tb.Lookup(k(3))
	if !equal(paths(p), []string{"/bin/launcher", "/sbin/init"}) {
		t.Fatalf("ancestors %v", paths(p))
	}
}

func TestTableBounds(t *testing.T) {
	tb, clk := newTestTable(TableOptions{MaxProcesses: 10, Grace: time.Hour, MaxAncestors: 3})
	tb.seed([]Process{{Key: k(1), PID: 1, Exe: exe("/init", 1)}})
	parent := k(1)
	for i := uint64(2); i <= 6; i++ {
		tb.fork(Process{Key: k(i), PID: int32(i), Parent: parent})
		tb.exec(Process{Key: k(i), PID: int32(i), Parent: parent, Exe: exe("/p", i)})
		parent = k(i)
	}
	if p, _ := tb.Lookup(k(6)); len(p.Ancestors) != 3 {
		t.Fatalf("chain of %d ancestors, want the cap of 3", len(p.Ancestors))
	}
	for i := uint64(2); i <= 6; i++ {
		tb.exit(k(i))
	}
	for i := uint64(100); i < 200; i++ {
		tb.fork(Process{Key: k(i), PID: int32(i), Parent: k(1)})
		clk.t = clk.t.Add(time.Millisecond)
	}
	if n := tb.Len(); n > 10 {
		t.Fatalf("table holds %d entries, bound is 10", n)
	}
	if tb.Overflows() == 0 {
		t.Fatal("a full table of live processes must count the ones it refused")
	}
	if _, ok := tb.Lookup(k(1)); !ok {
		t.Fatal("a live process was evicted to make room")
	}
}

func TestTableSeedLosesToEvents(t *testing.T) {
	tb, _ := newTestTable(TableOptions{})
	tb.exec(Process{Key: k(5), PID: 5, Exe: exe("/new", 5)})
	tb.exit(k(6)) // exited before the /proc snapshot was applied
	tb.seed([]Process{
		{Key: k(5), PID: 5, Exe: exe("/old", 50), FromProc: true},
		{Key: k(6), PID: 6, Exe: exe("/gone", 6), FromProc: true},
	})
	if p, _ := tb.Lookup(k(5)); p.Exe.Path != "/new" {
		t.Fatalf("seed overwrote a traced process: %q", p.Exe.Path)
	}
	if _, ok := tb.Lookup(k(6)); ok {
		t.Fatal("seed resurrected a process the tracer saw exit")
	}
}

func TestSystemdUnit(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/system.slice/nginx.service", "nginx.service"},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope", "run-r1.scope"},
		{"/system.slice/docker-abc.scope/init", "docker-abc.scope"},
		{"/", ""},
		{"/kubepods/besteffort/pod1", ""},
	}
	for _, tt := range tests {
		got, ok := SystemdUnit(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("SystemdUnit(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	line := "42 (a (weird) name) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 100 1 2 3\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.comm != "a (weird) name" || st.ppid != 7 || st.startTicks != 12345 || st.flags != 4194560 {
		t.Fatalf("%+v", st)
	}
	if _, err := parseStat([]byte("42 (x) S 7")); err == nil {
		t.Fatal("short stat accepted")
	}
}

func TestParseGroups(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []uint32
		err      bool
	}{
		{"several", "Name:\tx\nGid:\t0\t0\t0\t0\nGroups:\t4 27 100 \nNSpid:\t1\n", []uint32{4, 27, 100}, false},
		{"none", "Name:\tx\nGroups:\t\nNSpid:\t1\n", nil, false},
		{"missing", "Name:\tx\nNSpid:\t1\n", nil, true},
		{"cut", "Name:\tx\nGroups:\t4 2", nil, true},
		{"not a number", "Name:\tx\nGroups:\t4 x\n", nil, true},
		{"too large", "Name:\tx\nGroups:\t4294967296\n", nil, true},
	} {
		got, err := parseGroups([]byte(c.in))
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, %v; want %v (error %v)", c.name, got, err, c.want, c.err)
		}
	}
}
