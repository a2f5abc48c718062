package packaging_test

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// dist runs scripts/dist.sh for version into a new directory and returns
// the tarball and the package it wrote.
func dist(t *testing.T, version string) (tarball, deb string) {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("bash", "../scripts/dist.sh", out)
	cmd.Env = append(os.Environ(), "VERSION="+version)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dist.sh: %v\n%s", err, b)
	}
	lines := strings.Fields(string(b))
	if len(lines) < 2 {
		t.Fatalf("dist.sh printed %q", b)
	}
	return lines[len(lines)-2], lines[len(lines)-1]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

// TestDist builds the release tarball and the Debian package, checks the
// tarball's layout against SPIRE's, installs the package into a temporary
// root, upgrades it with a changed configuration file (which must be kept),
// and has systemd check the units.
func TestDist(t *testing.T) {
	for _, tool := range []string{"dpkg", "dpkg-deb", "tar", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			simtest.Skip(t, tool+" not installed (Debian's dpkg): "+err.Error())
		}
	}
	tarball, deb := dist(t, "1.0.0")
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	if filepath.Base(tarball) != "spire-hw-1.0.0-linux-"+arch+".tar.gz" || filepath.Base(deb) != "spire-hw_1.0.0_"+arch+".deb" {
		t.Errorf("artifact names %s, %s", tarball, deb)
	}

	t.Run("tarball", func(t *testing.T) {
		modes := tarModes(t, tarball)
		want := map[string]int64{
			"spire-hw-1.0.0/bin/spire-server":             0o755,
			"spire-hw-1.0.0/bin/spire-agent":              0o755,
			"spire-hw-1.0.0/bin/oidc-discovery-provider":  0o755,
			"spire-hw-1.0.0/conf/server/server.conf":      0o644,
			"spire-hw-1.0.0/conf/agent/agent.conf":        0o644,
			"spire-hw-1.0.0/systemd/spire-server.service": 0o644,
			"spire-hw-1.0.0/systemd/spire-agent.service":  0o644,
			"spire-hw-1.0.0/README.md":                    0o644,
		}
		for name, mode := range want {
			if got, ok := modes[name]; !ok || got != mode {
				t.Errorf("%s: mode %o present %v, want %o", name, got, ok, mode)
			}
		}
		dir := t.TempDir()
		run(t, "tar", "-C", dir, "-xzf", tarball)
		top := filepath.Join(dir, "spire-hw-1.0.0")
		// The shipped configurations are valid as they are: the daemons'
		// own validation, run from the release directory as SPIRE's is.
		for _, c := range [][]string{
			{"bin/spire-server", "validate", "-config", "conf/server/server.conf"},
			{"bin/spire-agent", "validate", "-config", "conf/agent/agent.conf"},
		} {
			cmd := exec.Command(filepath.Join(top, c[0]), c[1:]...)
			cmd.Dir = top
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: %v\n%s", strings.Join(c, " "), err, b)
			}
		}
	})

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The root has no libc6 package and no shell to chroot into: the
	// dependency is forced and the maintainer scripts run outside it, where
	// DPKG_ROOT tells them to leave the host's systemd alone.
	dpkg := func(args ...string) string {
		return run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-not-root",
			"--force-depends", "--log=/dev/null"}, args...)...)
	}
	dpkg("-i", deb)
	if st := dpkg("-l", "spire-hw"); !strings.Contains(st, "ii  spire-hw") || !strings.Contains(st, "1.0.0") {
		t.Fatalf("not installed:\n%s", st)
	}
	for name, mode := range map[string]os.FileMode{
		"usr/bin/spire-server":                    0o755,
		"usr/bin/spire-agent":                     0o755,
		"usr/bin/oidc-discovery-provider":         0o755,
		"etc/spire/server/server.conf":            0o644,
		"etc/spire/agent/agent.conf":              0o644,
		"lib/systemd/system/spire-server.service": 0o644,
		"lib/systemd/system/spire-agent.service":  0o644,
		"usr/share/doc/spire-hw/copyright":        0o644,
	} {
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %o", name, fi.Mode(), err, mode)
		}
	}
	// -version prints to stderr, as SPIRE's does; run folds it in.
	for _, bin := range []string{"spire-server", "oidc-discovery-provider"} {
		if v := run(t, filepath.Join(root, "usr/bin", bin), "-version"); strings.TrimSpace(v) != "1.0.0" {
			t.Errorf("packaged %s -version = %q, want 1.0.0 (make dist stamps VERSION)", bin, v)
		}
	}
	conf := readFile(t, filepath.Join(root, "etc/spire/server/server.conf"))
	for _, want := range []string{`data_dir = "/var/lib/spire-server"`, `socket_path = "/run/spire-server/private/api.sock"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("installed server.conf lacks %s", want)
		}
	}
	if got := strings.Fields(readFile(t, filepath.Join(root, "var/lib/dpkg/info/spire-hw.conffiles"))); !slices.Equal(got, []string{"/etc/spire/server/server.conf", "/etc/spire/agent/agent.conf"}) {
		t.Errorf("conffiles = %v", got)
	}

	t.Run("units", func(t *testing.T) {
		server := readFile(t, filepath.Join(root, "lib/systemd/system/spire-server.service"))
		agent := readFile(t, filepath.Join(root, "lib/systemd/system/spire-agent.service"))
		for _, u := range []string{server, agent} {
			for _, want := range []string{"ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "StateDirectory=", "SystemCallFilter=@system-service"} {
				if !strings.Contains(u, want) {
					t.Errorf("unit lacks %s", want)
				}
			}
		}
		if !strings.Contains(server, "DynamicUser=yes") || !strings.Contains(server, "CapabilityBoundingSet=\n") {
			t.Error("the server unit must run unprivileged with no capabilities")
		}
		if !strings.Contains(agent, "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_RESOURCE CAP_SYS_PTRACE\n") {
			t.Error("the agent unit's capabilities are not the tracer's and no more")
		}
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			simtest.Skip(t, "systemd-analyze not installed (Debian's systemd): "+err.Error())
		}
		// systemd-analyze verify resolves ExecStart on this machine: point
		// it at the installed binaries.
		dir := t.TempDir()
		var units []string
		for _, u := range []string{"spire-server.service", "spire-agent.service"} {
			body := strings.ReplaceAll(readFile(t, filepath.Join(root, "lib/systemd/system", u)), "/usr/bin/", filepath.Join(root, "usr/bin")+"/")
			p := filepath.Join(dir, u)
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			units = append(units, p)
		}
		run(t, "systemd-analyze", append([]string{"verify"}, units...)...)
	})

	t.Run("upgrade keeps the operator's configuration", func(t *testing.T) {
		_, deb2 := dist(t, "1.0.1")
		p := filepath.Join(root, "etc/spire/server/server.conf")
		edited := conf + "# edited by the operator\n"
		if err := os.WriteFile(p, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		dpkg("--force-confold", "-i", deb2)
		if st := dpkg("-l", "spire-hw"); !strings.Contains(st, "1.0.1") {
			t.Fatalf("not upgraded:\n%s", st)
		}
		if readFile(t, p) != edited {
			t.Error("the upgrade replaced the operator's server.conf")
		}
		dpkg("-r", "spire-hw")
		if _, err := os.Stat(filepath.Join(root, "usr/bin/spire-server")); !os.IsNotExist(err) {
			t.Errorf("binary left after removal: %v", err)
		}
	})
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tarModes(t *testing.T, path string) map[string]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]int64{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return modes
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		modes[strings.TrimSuffix(h.Name, "/")] = h.Mode & 0o777
	}
}
