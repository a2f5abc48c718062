package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

func selfPIDFD(t *testing.T) int {
	t.Helper()
	fd, err := sysunix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	return fd
}

func values(sel []*types.Selector) []string {
	var out []string
	for _, s := range sel {
		if s.Type != SelectorType {
			out = append(out, "WRONG TYPE "+s.Type)
		}
		out = append(out, s.Value)
	}
	return out
}

func TestAttestSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)

	sel, err := New(Config{DiscoverWorkloadPath: true}).Attest(context.Background(), int32(os.Getpid()), selfPIDFD(t))
	if err != nil {
		t.Fatal(err)
	}
	got := values(sel)
	want := []string{
		"uid:" + strconv.Itoa(os.Geteuid()),
		"gid:" + strconv.Itoa(os.Getegid()),
		"path:" + exe,
		"sha256:" + hex.EncodeToString(sum[:]),
	}
	if u, err := user.LookupId(strconv.Itoa(os.Geteuid())); err == nil {
		want = append(want, "user:"+u.Username)
	}
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getegid())); err == nil {
		want = append(want, "group:"+g.Name)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		want = append(want, "supplementary_gid:"+strconv.Itoa(g))
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing selector %q in %v", w, got)
		}
	}
}

func TestSizeLimit(t *testing.T) {
	ctx := context.Background()
	pid := int32(os.Getpid())
	fd := selfPIDFD(t)

	_, err := New(Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: 1024}).Attest(ctx, pid, fd)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("limit 1024 on a Go test binary: got %v, want ErrTooLarge", err)
	}

	sel, err := New(Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: -1}).Attest(ctx, pid, fd)
	if err != nil {
		t.Fatal(err)
	}
	got := values(sel)
	if !slices.ContainsFunc(got, func(s string) bool { return len(s) > 5 && s[:5] == "path:" }) {
		t.Fatalf("limit -1 must still give path: %v", got)
	}
	if slices.ContainsFunc(got, func(s string) bool { return len(s) > 7 && s[:7] == "sha256:" }) {
		t.Fatalf("limit -1 must disable sha256: %v", got)
	}

	sel, err = New(Config{}).Attest(ctx, pid, fd)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(values(sel), func(s string) bool { return len(s) > 5 && (s[:5] == "path:" || s[:5] == "sha25") }) {
		t.Fatalf("path/sha256 without discover_workload_path: %v", values(sel))
	}
}

func TestLookupFailureOmitsNames(t *testing.T) {
	a := New(Config{})
	fail := func(string) (string, error) { return "", errors.New("no such entry") }
	a.lookupUser, a.lookupGroup = fail, fail
	sel, err := a.Attest(context.Background(), int32(os.Getpid()), selfPIDFD(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values(sel) {
		if len(v) > 5 && (v[:5] == "user:" || v[:6] == "group:" || (len(v) > 20 && v[:20] == "supplementary_group:")) {
			t.Fatalf("name selector %q despite failed lookup", v)
		}
	}
}

func TestDeadCallerRefused(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := sysunix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sysunix.Close(fd)
	_ = cmd.Wait()
	// Our own PID stands in for "whatever now holds the number": the pidfd
	// says the caller is gone, so nothing may be attested.
	_, err = New(Config{}).Attest(context.Background(), int32(os.Getpid()), fd)
	if !errors.Is(err, peer.ErrExited) {
		t.Fatalf("got %v, want ErrExited", err)
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		uid     string
		gid     string
		groups  []string
		wantErr bool
	}{
		{name: "effective ids", in: "Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \n", uid: "2", gid: "6", groups: []string{"10", "20"}},
		{name: "single id", in: "Uid:\t7\nGid:\t8\nGroups:\t\n", uid: "7", gid: "8"},
		{name: "missing uid", in: "Gid:\t1\t1\t1\t1\n", wantErr: true},
		{name: "garbage uid", in: "Uid:\tx y\nGid:\t1\n", wantErr: true},
		{name: "negative group", in: "Uid:\t1\nGid:\t1\nGroups:\t-1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := parseStatus([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want error, got %+v", st)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.uid != tt.uid || st.gid != tt.gid || !slices.Equal(st.groups, tt.groups) {
				t.Fatalf("got %+v", st)
			}
		})
	}
}
