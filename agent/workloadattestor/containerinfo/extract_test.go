package containerinfo

import (
	"errors"
	"strings"
	"testing"
)

// IDs taken from real hosts' cgroup files (SPIRE's fixtures, kind, cri-o
// and containerd nodes); they are only hex, so which host does not matter.
const (
	cid     = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	cid2    = "34a2062fd26c805aa8cf814cdfe479322b791f80afb9ea4db02d50375df14b41"
	kindCID = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
	podUID  = "2c48913c-b29f-11e7-9350-020968147796"
	podUID2 = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
)

// us is podUID as the systemd cgroup driver spells it.
var us = strings.ReplaceAll(podUID, "-", "_")

func TestExtract(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string // a /proc/<pid>/cgroup file
		wantPod bool
		want    Info
		wantErr string
	}{
		{
			name: "DockerCgroupfsV1Hybrid",
			// docker 20.10, cgroupfs driver, on this repository's CI hosts.
			file: "9:name=systemd:/docker/" + cid + "\n8:pids:/docker/" + cid + "\n4:memory:/docker/" + cid + "\n1:cpu:/docker/" + cid + "\n0::/docker/" + cid + "\n",
			want: Info{ContainerID: cid},
		},
		{
			name: "DockerSystemdDriverV1",
			file: "11:hugetlb:/system.slice/docker-" + cid + ".scope\n4:devices:/system.slice/docker-" + cid + ".scope\n1:name=systemd:/system.slice/docker-" + cid + ".scope\n",
			want: Info{ContainerID: cid},
		},
		{
			name: "DockerSystemdDriverV2",
			file: "0::/system.slice/docker-" + cid + ".scope\n",
			want: Info{ContainerID: cid},
		},
		{
			name: "DockerV1UnifiedLeftInContainerd",
			// cgroup v2 unused by docker on a hybrid host: the unified line
			// still names containerd's service, not the container.
			file: "12:net_cls,net_prio:/docker/" + cid + "\n10:rdma:/\n1:name=systemd:/docker/" + cid + "\n0::/system.slice/containerd.service\n",
			want: Info{ContainerID: cid},
		},
		{
			name: "DockerCgroupParentKubepods",
			// docker run --cgroup-parent /kubepods/besteffort/pod<uid>
			file:    "9:name=systemd:/kubepods/besteffort/pod" + podUID + "/" + cid + "\n0::/kubepods/besteffort/pod" + podUID + "/" + cid + "\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "KubepodsCgroupfsV1",
			file:    "11:hugetlb:/kubepods/burstable/pod" + podUID + "/" + cid + "\n1:name=systemd:/kubepods/burstable/pod" + podUID + "/" + cid + "\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "KubepodsCgroupfsGuaranteed",
			file:    "0::/kubepods/pod" + podUID + "/" + cid + "\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "KubepodsSystemdDockerV1",
			file:    "10:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + us + ".slice/docker-" + cid + ".scope\n1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + us + ".slice/docker-" + cid + ".scope\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "KubepodsSystemdContainerdV2",
			file:    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/cri-containerd-" + cid + ".scope\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name: "KubepodsSystemdContainerdColons",
			// containerd's systemd cgroup path joined with colons as one
			// element, as older containerd and some v1 hosts render it.
			file:    "1:name=systemd:/system.slice/containerd.service/kubepods-burstable-pod" + us + ".slice:cri-containerd:" + cid + "\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "CrioSystemdV1",
			file:    "12:hugetlb:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/crio-" + cid + ".scope\n3:rdma:/\n1:systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/crio-" + cid + ".scope\n0::/system.slice/crio.service\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name: "CrioSystemdV1WithoutPod",
			// The docker attestor asks for no pod: "3:rdma:/" and the
			// unified crio.service line must not count as a second ID.
			file: "12:hugetlb:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/crio-" + cid + ".scope\n3:rdma:/\n0::/system.slice/crio.service\n",
			want: Info{ContainerID: cid},
		},
		{
			name:    "CrioPrivateCgroupNamespace",
			file:    "0::/../crio-" + cid + ".scope\n",
			wantPod: true,
			want:    Info{ContainerID: cid},
		},
		{
			name: "CrioConmon",
			// The conmon process is in a scope named for the container it
			// monitors, which SPIRE's rules accept.
			file: "1:name=systemd:/system.slice/crio-conmon-" + cid + ".scope\n0::/\n",
			want: Info{ContainerID: cid},
		},
		{
			name:    "KindPodWantPod",
			file:    "13:name=systemd:/docker/" + kindCID + "/kubepods/besteffort/pod" + podUID2 + "/" + cid + "\n1:cpuset:/docker/" + kindCID + "/kubepods/besteffort/pod" + podUID2 + "/" + cid + "\n0::/docker/" + kindCID + "/system.slice/containerd.service\n",
			wantPod: true,
			want:    Info{PodUID: podUID2, ContainerID: cid},
		},
		{
			name:    "KindPodWithoutPod",
			file:    "13:name=systemd:/docker/" + kindCID + "/kubepods/besteffort/pod" + podUID2 + "/" + cid + "\n0::/docker/" + kindCID + "/system.slice/containerd.service\n",
			wantErr: "multiple container IDs found",
		},
		{
			name:    "NestedDockerTakesInnermost",
			file:    "6:devices:/docker/" + kindCID + "/docker/" + cid + "\n",
			want:    Info{ContainerID: cid},
			wantPod: true,
		},
		{
			name: "HostUserSession",
			file: "11:hugetlb:/\n10:devices:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n",
			want: Info{},
		},
		{
			name: "ThisMachine",
			// A sandbox's own lines: the 32-hex element is no container ID.
			file: "9:name=systemd:/\n4:memory:/process_api/fbc95e52183ddf0064c3b5202dba9471\n1:cpu:/\n0::/\n",
			want: Info{},
		},
		{
			name: "SystemdService",
			file: "0::/system.slice/spire-agent.service\n",
			want: Info{},
		},
		{
			name: "IDNotAWholeWord",
			// 65 hex digits, or an underscore joined to them, are no ID.
			file: "0::/system.slice/x_" + cid + ".scope\n1:a:/docker/" + cid + "0\n",
			want: Info{},
		},
		{
			name: "TrailingSlashNamesNothing",
			file: "0::/docker/" + cid + "/\n",
			want: Info{},
		},
		{
			name:    "ContainerConflict",
			file:    "4:memory:/docker/" + cid + "\n0::/docker/" + cid2 + "\n",
			wantErr: "multiple container IDs found",
		},
		{
			name:    "PodConflict",
			file:    "0::/kubepods/besteffort/pod" + podUID + "/" + cid + "\n1:a:/kubepods/besteffort/pod" + podUID2 + "/" + cid + "\n",
			wantPod: true,
			wantErr: "multiple pod UIDs found",
		},
		{
			name: "PodOutranksPodless",
			// A path without a pod UID, even naming another container,
			// yields to one with a pod UID, before and after it.
			file:    "2:b:/other/" + cid2 + "\n1:a:/kubepods/besteffort/pod" + podUID + "/" + cid + "\n0::/other/" + cid2 + "\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "PodInSameElement",
			file:    "0::/kubepods/pod" + podUID + ":" + cid + "\n",
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name:    "PodBehindEmptyElementNotSeen",
			file:    "0::/pod" + podUID + "//" + cid + "\n",
			wantPod: true,
			want:    Info{ContainerID: cid},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cgs, err := ParseCgroups([]byte(tc.file))
			if err != nil {
				t.Fatalf("ParseCgroups: %v", err)
			}
			got, err := Proc{Cgroups: cgs}.Locate(tc.wantPod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrConflict) {
					t.Fatalf("Locate = %+v, %v; want ErrConflict %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Locate: %v", err)
			}
			if got != tc.want {
				t.Errorf("Locate = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestLocateMountRoots checks the order of trust: mount roots count only
// when no cgroup path names a container.
func TestLocateMountRoots(t *testing.T) {
	k8sRoot := "/../../kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + us + ".slice/cri-containerd-" + cid + ".scope"
	for _, tc := range []struct {
		name    string
		p       Proc
		wantPod bool
		want    Info
	}{
		{
			name:    "FallbackWhenCgroupIsRoot",
			p:       Proc{Cgroups: []Cgroup{{HierarchyID: "0", Path: "/"}}, MountRoots: []string{k8sRoot}},
			wantPod: true,
			want:    Info{PodUID: podUID, ContainerID: cid},
		},
		{
			name: "CgroupBeatsForgedMount",
			// A workload that bind-mounts another container's cgroup must
			// not become it.
			p:       Proc{Cgroups: []Cgroup{{HierarchyID: "0", Path: "/../" + cid2}}, MountRoots: []string{k8sRoot}},
			wantPod: true,
			want:    Info{ContainerID: cid2},
		},
		{
			name: "MountAtSlashSkipped",
			p:    Proc{Cgroups: []Cgroup{{HierarchyID: "0", Path: "/"}}, MountRoots: []string{"/docker/" + cid, "/", "/"}},
			want: Info{ContainerID: cid},
		},
		{
			name: "NothingAnywhere",
			p:    Proc{Cgroups: []Cgroup{{HierarchyID: "0", Path: "/"}}, MountRoots: []string{"/not-a-match"}},
			want: Info{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.Locate(tc.wantPod)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Locate = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseCgroups(t *testing.T) {
	good := "12:net_cls,net_prio:/docker/x\n1:name=systemd:/user.slice/a:b\n0::/\n"
	cgs, err := ParseCgroups([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(cgs) != 3 {
		t.Fatalf("got %d cgroups, want 3", len(cgs))
	}
	if c := cgs[0]; c.HierarchyID != "12" || len(c.Controllers) != 2 || !c.HasController("net_prio") || c.Path != "/docker/x" {
		t.Errorf("line 1 = %+v", c)
	}
	if c := cgs[1]; !c.HasController("name=systemd") || c.Path != "/user.slice/a:b" {
		t.Errorf("line 2 = %+v (a colon in a name belongs to the path)", c)
	}
	if c := cgs[2]; c.HierarchyID != "0" || c.Controllers != nil || c.Path != "/" {
		t.Errorf("line 3 = %+v", c)
	}

	for _, bad := range []string{
		"",
		"\n",
		"0::/\n\n",
		"0:/",
		"x::/",
		"-1:cpu:/",
		"0:cpu:/",
		"1::/",
		"1:cpu,,memory:/",
		"0::relative",
		"0::",
		"12345678901:cpu:/",
	} {
		if cgs, err := ParseCgroups([]byte(bad)); err == nil {
			t.Errorf("ParseCgroups(%q) = %+v, want an error", bad, cgs)
		}
	}
}

func TestParseMountInfo(t *testing.T) {
	in := strings.Join([]string{
		`572 571 0:63 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755`,
		`573 572 0:33 /docker/` + cid + ` /sys/fs/cgroup/systemd ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,xattr,name=systemd`,
		`2356 2355 0:30 /../` + cid + ` /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime shared:1 master:2 - cgroup2 cgroup rw`,
		// An empty source (tmpfs) is an empty field, not a shifted line.
		`119 206 0:68 / /local rw,relatime - tmpfs  rw,size=8192k`,
		`120 206 0:69 /a\040b /with\040space rw - ext4 /dev/sda1 rw`,
		`94 27 0:4 net:[4026532182] /run/netns/x rw - nsfs nsfs rw`,
	}, "\n") + "\n"
	ms, err := parseMountInfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mount{
		{"/", "/sys/fs/cgroup", "tmpfs"},
		{"/docker/" + cid, "/sys/fs/cgroup/systemd", "cgroup"},
		{"/../" + cid, "/sys/fs/cgroup", "cgroup2"},
		{"/", "/local", "tmpfs"},
		{"/a b", "/with space", "ext4"},
		{"net:[4026532182]", "/run/netns/x", "nsfs"},
	}
	if len(ms) != len(want) {
		t.Fatalf("got %d mounts, want %d", len(ms), len(want))
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, ms[i], want[i])
		}
	}

	for _, bad := range []string{
		`1 2 0:3 / /x rw`,
		`1 2 0:3 / /x rw -`,
		`1 2 0:3 / /x rw - cgroup`,
		`1 2 0:3 / /x rw - cgroup src`,
		`a 2 0:3 / /x rw - cgroup src rw`,
		`1 2 03 / /x rw - cgroup src rw`,
		`1 2 0:3  /x rw - cgroup src rw`,
		`1 2 0:3 /\04 /x rw - cgroup src rw`,
		`1 2 0:3 /\400 /x rw - cgroup src rw`,
		`1 2 0:3 /\09a /x rw - cgroup src rw`,
		`1 2 0:3 / /x rw -  src rw`,
		"1 2 0:3 / /x rw - tmpfs x rw\n\n",
	} {
		if ms, err := parseMountInfo([]byte(bad)); err == nil {
			t.Errorf("parseMountInfo(%q) = %+v, want an error", bad, ms)
		}
	}
}
