// Package pluginbuild builds the test plugins under test/plugins into
// binaries that a test can hand to a plugin host (ours or SPIRE's), once per
// test process and plugin name, so that many tests can share one build.
package pluginbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// modulePath is the import path prefix of the plugins this package builds.
const modulePath = "github.com/spiffe-hw/spire-hw/test/plugins/"

var (
	mu     sync.Mutex
	dir    string
	builds = map[string]string{}
)

// Build builds the plugin test/plugins/<name> (for example "keymanager") and
// returns the absolute path of its binary. The binary is built once per test
// process; later calls return the same path. The directory it lives in is
// left behind on purpose: binaries outlive any one test, and the process
// exits soon after. A failed build fails tb with the compiler's output.
func Build(tb testing.TB, name string) string {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()

	if path, ok := builds[name]; ok {
		return path
	}
	if dir == "" {
		d, err := os.MkdirTemp(os.TempDir(), fmt.Sprintf("spire-hw-plugins-%d-", os.Getpid()))
		if err != nil {
			tb.Fatalf("pluginbuild: make build directory: %v", err)
		}
		dir = d
	}
	goTool, err := goBinary()
	if err != nil {
		tb.Fatalf("pluginbuild: %v", err)
	}
	path := filepath.Join(dir, name)
	cmd := exec.Command(goTool, "build", "-o", path, modulePath+name)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("pluginbuild: go build %s: %v\n%s", name, err, out)
	}
	builds[name] = path
	return path
}

// SHA256 returns the hex SHA-256 of the file at path, as SPIRE's plugin_checksum
// wants it.
func SHA256(tb testing.TB, path string) string {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("pluginbuild: read %s: %v", path, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// goBinary is the go tool on PATH, as `go test` itself (and e2e's
// TestMain) runs it; GOROOT is only a fallback for a PATH without it.
func goBinary() (string, error) {
	if path, err := exec.LookPath("go"); err == nil {
		return path, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		candidate := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}
	return "", errors.New("pluginbuild: find the go tool: not on PATH and GOROOT is unset")
}
