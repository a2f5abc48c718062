package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/config"
)

// TestHelpLayout checks the command list and a parent's help against the
// layout of SPIRE v1.13.3's spire-server (mitchellh/cli): names padded to
// the longest, four spaces either side, parents without a synopsis.
func TestHelpLayout(t *testing.T) {
	code, out, errs := runMain()
	if code != 127 || out != "" {
		t.Fatalf("no args: exit %d, stdout %q", code, out)
	}
	const head = "Usage: spire-server [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n"
	if !strings.HasPrefix(errs, head) || !strings.HasSuffix(errs, "\n\n") {
		t.Fatalf("usage:\n%s", errs)
	}
	lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(errs, head), "\n\n"), "\n")
	width := 0
	for _, l := range lines {
		name := strings.Fields(l)[0]
		width = max(width, len(name))
	}
	// Parents are made up and have no synopsis, as in SPIRE.
	wantSynopsis := map[string]string{
		"agent": "", "bundle": "", "entry": "", "federation": "", "logger": "",
		"healthcheck": "Determines server health status",
		"run":         "Runs the server",
		"validate":    "Validates a SPIRE server configuration file",
	}
	line := regexp.MustCompile(`^    ([a-z0-9]+) *    (.*)$`)
	var names []string
	for _, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil || len(l) < 4+width+4 || l[4+width:4+width+4] != "    " {
			t.Fatalf("line %q is not laid out as SPIRE's", l)
		}
		names = append(names, m[1])
		if want, ok := wantSynopsis[m[1]]; ok && m[2] != want {
			t.Fatalf("%s: synopsis %q, want %q", m[1], m[2], want)
		}
	}
	for _, n := range []string{"agent", "bundle", "entry", "healthcheck", "jwt", "logger", "run", "token", "validate", "x509"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+n+" ") {
			t.Fatalf("%s missing from %v", n, names)
		}
	}

	const agentHelp = "This command is accessed by using one of the subcommands below.\n\n" +
		"Subcommands:\n" +
		"    ban      Ban an attested agent given its SPIFFE ID\n" +
		"    count    Count attested agents\n" +
		"    evict    Evicts an attested agent given its SPIFFE ID\n" +
		"    list     Lists attested agents and their SPIFFE IDs\n" +
		"    purge    Purge expired agents that were attested using a non-TOFU security model based on a given time\n" +
		"    show     Shows the details of an attested agent given its SPIFFE ID\n"
	if code, out, errs := runMain("agent", "-h"); code != 0 || out != "" || errs != agentHelp {
		t.Fatalf("agent -h: exit %d\n%s\nwant:\n%s", code, errs, agentHelp)
	}
	const loggerHelp = "This command is accessed by using one of the subcommands below.\n\n" +
		"Subcommands:\n" +
		"    get      Gets the logger details\n" +
		"    reset    Reset the logger details to launch level\n" +
		"    set      Sets the logger details\n"
	if code, _, errs := runMain("logger"); code != 1 || errs != loggerHelp {
		t.Fatalf("logger: exit %d\n%s", code, errs)
	}
	if code, _, errs := runMain("bundle", "count", "-h"); code != 0 ||
		errs != "Usage of bundle count:\n  -output value\n    \tDesired output format (pretty, json); default: pretty.\n"+
			"  -socketPath string\n    \tPath to the SPIRE Server API socket (default \"/tmp/spire-server/private/api.sock\")\nflag: help requested\n" {
		t.Fatalf("bundle count -h: exit %d\n%q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	for _, f := range []string{"-v", "-version", "--version"} {
		code, out, errs := runMain(f)
		if code != 0 || out != "" || errs == "" || strings.Count(errs, "\n") != 1 {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", f, code, out, errs)
		}
	}
}

const validServerConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "$TD"
    data_dir = "./data/server"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./data/server/datastore.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`

// TestValidate runs validate on good and bad files and checks that it
// refuses exactly what run's loader refuses, with the same reason.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(good, []byte(validServerConf), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte(strings.Replace(validServerConf, "bind_port", "bind_prot", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TD", "example.org")

	code, out, errs := runMain("validate", "-config", good, "-expandEnv")
	if code != 0 || out != "SPIRE server configuration file is valid.\n" || errs != "" {
		t.Fatalf("valid: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for name, args := range map[string][]string{
		"unknown key":             {"-config", bad, "-expandEnv"},
		"$TD left unexpanded":     {"-config", good},
		"flag overrides the file": {"-config", good, "-expandEnv", "-serverPort", "http"},
		"missing file":            {"-config", filepath.Join(dir, "none.conf")},
	} {
		t.Run(name, func(t *testing.T) {
			_, runErr := config.FromRunArgs(args, &strings.Builder{})
			if runErr == nil {
				t.Fatal("run's loader accepts it")
			}
			code, out, errs := runMain(append([]string{"validate"}, args...)...)
			want := "SPIRE server configuration file is invalid: " + runErr.Error() + "\n"
			if code != 1 || out != "" || errs != want {
				t.Fatalf("exit %d, stdout %q\nstderr %q\nwant   %q", code, out, errs, want)
			}
		})
	}
	code, _, errs = runMain("validate", "-bogus")
	if code != 1 || !strings.Contains(errs, "flag provided but not defined: -bogus\nUsage of validate:\n") {
		t.Fatalf("bad flag: exit %d, %q", code, errs)
	}
}
