package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/config"
)

// TestHelpLayout checks the command list and the "api" parent against the
// text SPIRE v1.13.3's spire-agent prints (mitchellh/cli's layout), byte
// for byte, with our "logger" (SPIRE's agent has none) laid out the same.
func TestHelpLayout(t *testing.T) {
	const top = "Usage: spire-agent [--version] [--help] <command> [<args>]\n\n" +
		"Available commands are:\n" +
		"    api            \n" +
		"    healthcheck    Determines agent health status\n" +
		"    logger         \n" +
		"    run            Runs the agent\n" +
		"    validate       Validates a SPIRE agent configuration file\n\n"
	const api = "This command is accessed by using one of the subcommands below.\n\n" +
		"Subcommands:\n" +
		"    fetch       Fetches X509 SVIDs from the Workload API\n" +
		"    validate    \n" +
		"    watch       Attaches to the Workload API and prints updates as they're received\n"
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 127, top},
		{[]string{"-h"}, 0, top},
		{[]string{"--help"}, 0, top},
		{[]string{"logger"}, 1, "This command is accessed by using one of the subcommands below.\n\n" +
			"Subcommands:\n" +
			"    get      Gets the logger details\n" +
			"    reset    Reset the logger details to launch level\n" +
			"    set      Sets the logger details\n"},
		{[]string{"bogus"}, 127, top},
		{[]string{"api"}, 1, api},
		{[]string{"api", "-h"}, 0, api},
		{[]string{"api", "bogus"}, 1, api},
		{[]string{"api", "validate"}, 1, "This command is accessed by using one of the subcommands below.\n\n" +
			"Subcommands:\n    jwt    Validates a JWT SVID\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := runCLI(t, tt.args...)
			if code != tt.code || out != "" || errs != tt.stderr {
				t.Fatalf("exit %d (want %d), stdout %q\nstderr:\n%s\nwant:\n%s", code, tt.code, out, errs, tt.stderr)
			}
		})
	}

	// A command with subcommands of its own prints its flags, then them.
	code, _, errs := runCLI(t, "api", "fetch", "-h")
	if code != 0 || !strings.HasPrefix(errs, "Usage of fetch x509:\n") ||
		!strings.HasSuffix(errs, "\n\n\nSubcommands:\n    jwt     Fetches a JWT SVID from the Workload API\n    x509    Fetches X509 SVIDs from the Workload API\n") {
		t.Fatalf("api fetch -h: exit %d\n%s", code, errs)
	}
	code, _, errs = runCLI(t, "api", "watch", "-h")
	if code != 0 || !strings.HasPrefix(errs, "Usage of watch:\n") || !strings.HasSuffix(errs, "\nflag: help requested\n") {
		t.Fatalf("api watch -h: exit %d\n%s", code, errs)
	}
}

func TestVersion(t *testing.T) {
	for _, f := range []string{"-v", "-version", "--version"} {
		code, out, errs := runCLI(t, f)
		if code != 0 || out != "" || errs == "" || strings.Count(errs, "\n") != 1 {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", f, code, out, errs)
		}
	}
	// After the subcommand it is that command's flag, not the program's.
	if code, _, errs := runCLI(t, "validate", "-version"); code != 1 || !strings.Contains(errs, "flag provided but not defined: -version") {
		t.Fatalf("validate -version: exit %d, %q", code, errs)
	}
}

const validAgentConf = `agent {
    data_dir = "./data/agent"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path = "/tmp/spire-agent/public/api.sock"
    trust_bundle_path = "./conf/agent/dummy_root_ca.crt"
    trust_domain = "$TD"
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`

// TestValidate runs validate on good and bad files and checks that it
// refuses exactly what run's loader refuses, with the same reason.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(good, []byte(validAgentConf), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte(strings.Replace(validAgentConf, "data_dir", "data_dri", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TD", "example.org")

	code, out, errs := runCLI(t, "validate", "-config", good, "-expandEnv")
	if code != 0 || out != "SPIRE agent configuration file is valid.\n" || errs != "" {
		t.Fatalf("valid: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for name, args := range map[string][]string{
		"unknown key":             {"-config", bad, "-expandEnv"},
		"$TD left unexpanded":     {"-config", good},
		"flag overrides the file": {"-config", good, "-expandEnv", "-trustDomain", "not a domain"},
		"missing file":            {"-config", filepath.Join(dir, "none.conf")},
	} {
		t.Run(name, func(t *testing.T) {
			_, runErr := config.FromRunArgs(args, &strings.Builder{})
			if runErr == nil {
				t.Fatal("run's loader accepts it")
			}
			code, out, errs := runCLI(t, append([]string{"validate"}, args...)...)
			want := "SPIRE agent configuration file is invalid: " + runErr.Error() + "\n"
			if code != 1 || out != "" || errs != want {
				t.Fatalf("exit %d, stdout %q\nstderr %q\nwant   %q", code, out, errs, want)
			}
		})
	}
	code, _, errs = runCLI(t, "validate", "-bogus")
	if code != 1 || !strings.Contains(errs, "flag provided but not defined: -bogus\nUsage of validate:\n") {
		t.Fatalf("bad flag: exit %d, %q", code, errs)
	}
}
