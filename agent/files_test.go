package agent

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/manager"
)

func dataDirConf(t *testing.T, dataDir string) *config.Config {
	t.Helper()
	text := fmt.Sprintf("agent {\n    data_dir = %q\n    server_address = \"127.0.0.1\"\n    trust_domain = \"example.org\"\n    insecure_bootstrap = true\n    join_token = \"t\"\n    socket_path = %q\n}\nplugins {\n    KeyManager \"memory\" {}\n    NodeAttestor \"join_token\" {}\n    WorkloadAttestor \"unix\" {}\n}\n",
		dataDir, filepath.Join(dataDir, "api.sock"))
	cfg, err := config.Parse("agent.conf", []byte(text), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", text, err)
	}
	return cfg
}

// A data_dir the agent creates is 0700 and its cache 0600 even under
// umask 0; one that exists keeps its mode, and a shared one is warned of.
func TestDataDirModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing fs.FileMode // 0: the agent creates it
		want     fs.FileMode
		warn     bool
	}{
		{"created under umask 0", 0, 0o700, false},
		{"existing 0755", 0o755, 0o755, true},
		{"existing 0700", 0o700, 0o700, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "agent")
			if tc.existing != 0 {
				if err := os.Mkdir(dataDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dataDir, tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			old := syscall.Umask(0)
			defer syscall.Umask(old)
			var logs bytes.Buffer
			a, err := New(dataDirConf(t, dataDir), slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			a.manager.Close()
			closePlugins(a.plugins, a.log)
			fi, err := os.Stat(dataDir)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != fs.ModeDir|tc.want {
				t.Errorf("data_dir %v, want %v", fi.Mode(), fs.ModeDir|tc.want)
			}
			cache, err := os.Stat(filepath.Join(dataDir, manager.CacheFile))
			if err != nil {
				t.Fatal(err)
			}
			if cache.Mode() != 0o600 {
				t.Errorf("%s: %v, want -rw-------", manager.CacheFile, cache.Mode())
			}
			warned := strings.Contains(logs.String(), "chmod 700 "+dataDir)
			if warned != tc.warn {
				t.Errorf("warned about data_dir = %v, want %v; logs:\n%s", warned, tc.warn, logs.String())
			}
		})
	}
}
