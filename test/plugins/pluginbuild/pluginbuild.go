// Package pluginbuild builds the test plugins under test/plugins into
// binaries that a test can hand to a plugin host (ours or SPIRE's), once per
// test process and plugin name, so that many tests can share one build.
package pluginbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// goBinary prefers the go tool of the toolchain that built the test, so the
// plugins are built with the same Go as the host; PATH is the fallback.
func goBinary() (string, error) {
	candidate := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(candidate); err == nil {
		return candidate, nil
	}
	path, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("find the go tool: %w", err)
	}
	return path, nil
}
