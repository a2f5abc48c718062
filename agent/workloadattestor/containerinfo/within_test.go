package containerinfo

import (
	"errors"
	"testing"
)

func TestWithin(t *testing.T) {
	const a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	const b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	cg := func(s string) []Cgroup {
		c, err := ParseCgroups([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	initB := cg("4:memory:/docker/" + b + "\n1:name=systemd:/docker/" + b + "\n0::/system.slice/docker-" + b + ".scope\n")
	for _, tc := range []struct {
		name      string
		caller    []Cgroup
		container []Cgroup
		ok        bool
	}{
		{"same cgroups as the init", initB, initB, true},
		{"beneath the container's cgroup",
			cg("4:memory:/docker/" + b + "/x\n1:name=systemd:/docker/" + b + "\n0::/system.slice/docker-" + b + ".scope/app.service\n"), initB, true},
		{"init in a sub-cgroup of its container",
			cg("0::/system.slice/docker-" + b + ".scope/app.service\n"), cg("0::/system.slice/docker-" + b + ".scope/init.scope\n"), true},
		{"a v1 cgroup something else keeps the caller in",
			cg("4:memory:/session-3.scope\n0::/docker/" + b + "\n"), cg("4:memory:/docker/" + b + "\n0::/docker/" + b + "\n"), true},
		{"located by mount roots: every hierarchy checked",
			cg("4:memory:/session-3.scope\n0::/\n"), cg("4:memory:/docker/" + b + "\n0::/\n"), false},
		{"located by mount roots, in the container's cgroups",
			cg("4:memory:/docker/" + b + "/x\n0::/\n"), cg("4:memory:/docker/" + b + "\n0::/\n"), true},
		{"controller left at the root by the runtime", cg("3:rdma:/\n0::/docker/" + b + "\n"), cg("3:rdma:/\n0::/docker/" + b + "\n"), true},
		{"forged in a user manager's delegated subtree",
			cg("0::/user.slice/user-1000.slice/user@1000.service/docker-" + b + ".scope\n"), cg("0::/system.slice/docker-" + b + ".scope\n"), false},
		{"forged beneath another container's cgroup",
			cg("4:memory:/docker/" + a + "/" + b + "\n0::/\n"), cg("4:memory:/docker/" + b + "\n0::/\n"), false},
		{"forged in v2 only", cg("4:memory:/docker/" + b + "\n0::/docker/" + a + "/docker-" + b + ".scope\n"),
			cg("4:memory:/docker/" + b + "\n0::/docker-" + b + ".scope\n"), false},
		{"a sibling whose name extends the container's", cg("0::/docker/" + b + "x\n"), cg("0::/docker/" + b + "\n"), false},
		{"a hierarchy the init lacks", cg("5:pids:/docker/" + b + "\n"), cg("4:memory:/docker/" + b + "\n"), false},
		{"nothing to compare", nil, initB, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Within(tc.caller, tc.container, b)
			if tc.ok && err != nil {
				t.Fatalf("Within = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrNotWithin) {
				t.Fatalf("Within = %v, want ErrNotWithin", err)
			}
		})
	}
}
