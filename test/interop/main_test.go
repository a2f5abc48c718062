package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// impl names one implementation's pair of binaries.
type impl struct {
	name string // "ours" or "spire-v1.13.3", for messages
	dir  string // holds spire-server and spire-agent
}

func (i impl) server() string { return filepath.Join(i.dir, "spire-server") }
func (i impl) agent() string  { return filepath.Join(i.dir, "spire-agent") }

var (
	ours     impl
	upstream impl
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if upstream, err = buildUpstream(); err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	var cleanup func()
	if ours, cleanup, err = buildOurs(); err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer cleanup()
	defer removePlugins()
	fmt.Fprintf(os.Stderr, "interop: ours=%s upstream=%s (%s)\n", ours.dir, upstream.dir, upstream.name)
	return m.Run()
}

// spireVersion reads the SPIRE version this module pins, so that the cache
// directory changes when the pin does.
func spireVersion() (string, error) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		return "", fmt.Errorf("read go.mod: %w", err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/spiffe/spire (v\S+)`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("go.mod does not require github.com/spiffe/spire")
	}
	return string(m[1]), nil
}

// buildUpstream builds SPIRE's binaries from the module graph of this
// module once and caches them in .bin/<version>: a SPIRE build takes
// minutes on this machine.
func buildUpstream() (impl, error) {
	v, err := spireVersion()
	if err != nil {
		return impl{}, err
	}
	dir, err := filepath.Abs(filepath.Join(".bin", v))
	if err != nil {
		return impl{}, err
	}
	u := impl{name: "spire-" + v, dir: dir}
	if fileExists(u.server()) && fileExists(u.agent()) {
		return u, nil
	}
	fmt.Fprintf(os.Stderr, "interop: building SPIRE %s into %s (takes minutes, cached afterwards)\n", v, dir)
	tmp := dir + ".tmp"
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return impl{}, err
	}
	cmd := exec.Command("go", "build", "-o", tmp+"/",
		"github.com/spiffe/spire/cmd/spire-server", "github.com/spiffe/spire/cmd/spire-agent")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return impl{}, fmt.Errorf("build SPIRE %s: %w", v, err)
	}
	// Rename last so that an interrupted build is never mistaken for a
	// cached one.
	if err := os.Rename(tmp, dir); err != nil {
		return impl{}, err
	}
	return u, nil
}

// buildOurs uses SPIRE_HW_BIN (set by `make interop` after `make build`)
// or builds our binaries from the main module into a temp dir, so that a
// plain `go test` here never runs stale binaries.
func buildOurs() (impl, func(), error) {
	if d := os.Getenv("SPIRE_HW_BIN"); d != "" {
		o := impl{name: "ours", dir: d}
		if !fileExists(o.server()) || !fileExists(o.agent()) {
			return impl{}, nil, fmt.Errorf("SPIRE_HW_BIN=%s lacks spire-server or spire-agent", d)
		}
		return o, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "interop-bin")
	if err != nil {
		return impl{}, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	for _, name := range []string{"spire-server", "spire-agent"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = filepath.Join("..", "..")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			cleanup()
			return impl{}, nil, fmt.Errorf("build our %s: %w", name, err)
		}
	}
	return impl{name: "ours", dir: dir}, cleanup, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
