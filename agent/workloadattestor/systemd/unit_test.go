package systemd

import (
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
)

func TestUnitFromPath(t *testing.T) {
	for _, tc := range []struct {
		path  string
		unit  string
		slice bool
		err   string
	}{
		{path: "/system.slice/sshd.service", unit: "sshd.service"},
		{path: "/system.slice/system-getty.slice/getty@tty1.service", unit: "getty@tty1.service"},
		{path: "/system.slice/system-foo.slice/foo@a@b.service", unit: "foo@a@b.service"},
		{path: "/init.scope", unit: "init.scope"},
		{path: "/user.slice/user-1000.slice/session-2.scope", unit: "session-2.scope"},
		// A user manager's own units are below user@1000.service, which
		// the user names: the system's unit is user@1000.service.
		{path: "/user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service", unit: "user@1000.service"},
		// A delegated subtree (Delegate=yes) is named by the service.
		{path: "/system.slice/docker.service/sneaky.service", unit: "docker.service"},
		{path: "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope", unit: "docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"},
		{path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope", unit: "cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"},
		{path: "/system.slice/var-lib-x.mount", unit: "var-lib-x.mount"},
		{path: "/system.slice/dev-sda2.swap", unit: "dev-sda2.swap"},
		{path: "/system.slice/sshd.socket", unit: "sshd.socket"},
		// cg_escape: "cpu.service" would read as a controller's file.
		{path: "/system.slice/_cpu.service", unit: "cpu.service"},
		{path: "/system.slice/x\\x2dy.service", unit: "x\\x2dy.service"},
		{path: "/", unit: "-.slice", slice: true},
		{path: "/system.slice", unit: "system.slice", slice: true},
		{path: "/user.slice/user-1000.slice", unit: "user-1000.slice", slice: true},
		{path: "/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", unit: "-.slice", slice: true},
		{path: "/process_api/fbc95e52183ddf0064c3b5202dba9471", unit: "-.slice", slice: true},
		{path: "/system.slice/multi-user.target", unit: "system.slice", slice: true},
		{path: "/system.slice/getty@.service", unit: "system.slice", slice: true},
		{path: "/system.slice/@x.service", unit: "system.slice", slice: true},
		{path: "/system.slice/.service", unit: "system.slice", slice: true},
		{path: "/system.slice/a b.service", unit: "system.slice", slice: true},
		{path: "/system.slice/" + strings.Repeat("a", 250) + ".service", unit: "system.slice", slice: true},
		{path: "/../sshd.service", err: "outside the agent's cgroup namespace"},
		{path: "/system.slice/../sshd.service", err: "outside the agent's cgroup namespace"},
		{path: "relative.service", err: "not absolute"},
	} {
		unit, slice, err := unitFromPath(tc.path)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("unitFromPath(%q) = %q, %v; want error %q", tc.path, unit, err, tc.err)
			}
		case err != nil:
			t.Errorf("unitFromPath(%q): %v", tc.path, err)
		case unit != tc.unit || slice != tc.slice:
			t.Errorf("unitFromPath(%q) = %q (slice %v), want %q (slice %v)", tc.path, unit, slice, tc.unit, tc.slice)
		}
	}
}

func TestSystemdPath(t *testing.T) {
	for _, tc := range []struct {
		file, want string
	}{
		// Hybrid: systemd tracks processes in name=systemd.
		{"9:name=systemd:/system.slice/a.service\n4:memory:/\n0::/system.slice/b.service\n", "/system.slice/a.service"},
		{"0::/system.slice/b.service\n", "/system.slice/b.service"},
		{"1:name=systemd:/system.slice/a.service\n", "/system.slice/a.service"},
	} {
		cgs, err := containerinfo.ParseCgroups([]byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := systemdPath(cgs); err != nil || got != tc.want {
			t.Errorf("systemdPath(%q) = %q, %v; want %q", tc.file, got, err, tc.want)
		}
	}
	cgs, _ := containerinfo.ParseCgroups([]byte("4:memory:/x.service\n3:cpu:/\n"))
	if got, err := systemdPath(cgs); err == nil {
		t.Errorf("systemdPath without a systemd hierarchy = %q, want an error", got)
	}
}

func FuzzUnitFromPath(f *testing.F) {
	f.Add("/system.slice/system-getty.slice/getty@tty1.service")
	f.Add("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service")
	f.Add("/system.slice/_cpu.service")
	f.Add("/")
	f.Add("//a.service")
	f.Add("/a.slice/b.target")
	f.Fuzz(func(t *testing.T, p string) {
		unit, slice, err := unitFromPath(p)
		if err != nil {
			return
		}
		typ, ok := unitType(unit)
		if !ok {
			t.Fatalf("unitFromPath(%q) = %q, not a unit name", p, unit)
		}
		if slice != (typ == "slice") || (!slice && !processUnits[typ]) {
			t.Fatalf("unitFromPath(%q) = %q, slice %v", p, unit, slice)
		}
		if unit != "-.slice" && !strings.Contains(p, unit) {
			t.Fatalf("unit %q not in path %q", unit, p)
		}
	})
}
