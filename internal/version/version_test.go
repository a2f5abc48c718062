package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "968390f9c4d3a1b2c3d4e5f60718293a4b5c6d7e"}}
	dirty := append(append([]debug.BuildSetting(nil), rev...), debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	for _, tt := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{name: "go install of a release", bi: debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, want: "1.4.0"},
		{name: "devel with revision", bi: debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, want: "dev-968390f"},
		{name: "dirty tree", bi: debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: dirty}, want: "dev-968390f-dirty"},
		{name: "pseudo-version names the revision instead", bi: debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202122250-968390f9c4d3"}, Settings: rev}, want: "dev-968390f"},
		{name: "pseudo-version of a dirty tree", bi: debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202122250-968390f9c4d3+dirty"}, Settings: dirty}, want: "dev-968390f-dirty"},
		{name: "nothing recorded", bi: debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, want: "dev-unk"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fromBuildInfo(&tt.bi); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestVersionPrefersStamp(t *testing.T) {
	old := stamp
	t.Cleanup(func() { stamp = old })
	stamp = "v2.0.1"
	if got := Version(); got != "2.0.1" {
		t.Fatalf("stamped: got %q", got)
	}
	stamp = ""
	oldRead := readBuildInfo
	t.Cleanup(func() { readBuildInfo = oldRead })
	readBuildInfo = func() (*debug.BuildInfo, bool) { return nil, false }
	if got := Version(); got != "unknown" {
		t.Fatalf("no build info: got %q", got)
	}
}

// TestBinaryVersion builds spire-server twice, with the linker stamp that
// `make build` passes and without it, and runs -version on each.
func TestBinaryVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "spire-server")
	build := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), "./cmd/spire-server")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	version := func(flag string) string {
		t.Helper()
		cmd := exec.Command(bin, flag)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", bin, flag, err, stderr.String())
		}
		if len(out) != 0 {
			t.Fatalf("%s printed to stdout: %q (SPIRE prints the version on stderr)", flag, out)
		}
		return stderr.String()
	}

	build("-ldflags", "-X github.com/spiffe-hw/spire-hw/internal/version.stamp=v9.8.7-3-gabcdef0")
	for _, f := range []string{"-version", "--version", "-v"} {
		if got := version(f); got != "9.8.7-3-gabcdef0\n" {
			t.Fatalf("stamped %s: got %q", f, got)
		}
	}

	build("-buildvcs=false")
	if got := version("-version"); got != "dev-unk\n" {
		t.Fatalf("unstamped, no VCS info: got %q", got)
	}
	// Go stamps VCS information only from a .git directory, not from the
	// .git file of a linked worktree.
	if fi, err := os.Stat(filepath.Join(root, ".git")); err == nil && fi.IsDir() {
		if _, err := exec.LookPath("git"); err == nil {
			build("-buildvcs=true")
			if got := version("-version"); !strings.HasPrefix(got, "dev-") || got == "dev-unk\n" {
				t.Fatalf("unstamped with VCS info: got %q, want dev-<revision>", got)
			}
		}
	}
}
