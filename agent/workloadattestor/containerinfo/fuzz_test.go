package containerinfo

import (
	"regexp"
	"strings"
	"testing"
)

func FuzzParseCgroups(f *testing.F) {
	f.Add([]byte("12:net_cls,net_prio:/docker/" + cid + "\n1:name=systemd:/docker/" + cid + "\n0::/docker/" + cid + "\n"))
	f.Add([]byte("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/cri-containerd-" + cid + ".scope"))
	f.Add([]byte("1:name=systemd:/system.slice/containerd.service/kubepods-burstable-pod" + us + ".slice:cri-containerd:" + cid + "\n"))
	f.Add([]byte("3:rdma:/\n0::/../crio-" + cid + ".scope\n"))
	f.Add([]byte("0:cpu:/\n"))
	f.Add([]byte("1::/\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cgs, err := ParseCgroups(b)
		if err != nil {
			return
		}
		// What was accepted renders back to the input: nothing was
		// dropped, split differently or invented.
		var sb strings.Builder
		for i, c := range cgs {
			if !isDecimal(c.HierarchyID) || !strings.HasPrefix(c.Path, "/") {
				t.Fatalf("accepted line %+v", c)
			}
			if i > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString(c.HierarchyID + ":" + strings.Join(c.Controllers, ",") + ":" + c.Path)
		}
		if in := strings.TrimSuffix(string(b), "\n"); sb.String() != in {
			t.Fatalf("parsed %q renders as %q", in, sb.String())
		}
	})
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add([]byte("573 572 0:33 /docker/" + cid + " /sys/fs/cgroup/systemd ro,nosuid master:11 - cgroup cgroup rw,xattr,name=systemd\n"))
	f.Add([]byte("2356 2355 0:30 /../" + cid + " /sys/fs/cgroup ro shared:1 master:2 - cgroup2 cgroup rw\n119 206 0:68 / /local rw,relatime - tmpfs  rw,size=8192k\n"))
	f.Add([]byte(`120 206 0:69 /a\040b /with\040space rw - ext4 /dev/sda1 rw`))
	f.Add([]byte("94 27 0:4 net:[4026532182] /run/netns/x rw - nsfs nsfs rw\n"))
	f.Add([]byte(`1 2 0:3 /\4 /x rw - - - -`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := parseMountInfo(b)
		if err != nil {
			return
		}
		if in := strings.TrimSuffix(string(b), "\n"); in != "" {
			if n := strings.Count(in, "\n") + 1; len(ms) != n {
				t.Fatalf("%d mounts from %d lines", len(ms), n)
			}
		} else if len(ms) != 0 {
			t.Fatalf("%d mounts from no lines", len(ms))
		}
		for _, m := range ms {
			if m.root == "" || m.fsType == "" {
				t.Fatalf("accepted mount %+v", m)
			}
		}
	})
}

var (
	hex64     = regexp.MustCompile(`^[[:xdigit:]]{64}$`)
	canonical = regexp.MustCompile(`^[[:xdigit:]]{8}-[[:xdigit:]]{4}-[[:xdigit:]]{4}-[[:xdigit:]]{4}-[[:xdigit:]]{12}$`)
)

func FuzzExtract(f *testing.F) {
	f.Add("/kubepods/besteffort/pod"+podUID+"/"+cid+"\n/docker/"+cid, true)
	f.Add("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+us+".slice/cri-containerd-"+cid+".scope\n/", true)
	f.Add("/docker/"+kindCID+"/kubepods/besteffort/pod"+podUID2+"/"+cid+"\n/docker/"+kindCID+"/system.slice/containerd.service", false)
	f.Add("/pod"+podUID+":"+cid+"\n/x/"+cid2, true)
	f.Add("//"+cid+"/\n/../"+cid, true)
	f.Fuzz(func(t *testing.T, in string, wantPod bool) {
		paths := strings.Split(in, "\n")
		info, err := Extract(paths, wantPod)
		if err != nil {
			if info != (Info{}) {
				t.Fatalf("error %v with info %+v", err, info)
			}
			return
		}
		if info.ContainerID != "" && (!hex64.MatchString(info.ContainerID) || !strings.Contains(in, info.ContainerID)) {
			t.Fatalf("container ID %q not a 64-hex word of the input", info.ContainerID)
		}
		if info.PodUID != "" {
			if !wantPod || info.ContainerID == "" || !canonical.MatchString(info.PodUID) {
				t.Fatalf("pod UID %q (wantPod %v, container %q)", info.PodUID, wantPod, info.ContainerID)
			}
			if !strings.Contains(strings.ReplaceAll(in, "_", "-"), "pod"+info.PodUID) {
				t.Fatalf("pod UID %q not in the input", info.PodUID)
			}
		}
		// The container ID must be one of some single path's, found the
		// same way alone.
		if info.ContainerID != "" {
			ok := false
			for _, p := range paths {
				if extract(p, false).ContainerID == info.ContainerID {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("container ID %q is no path's own", info.ContainerID)
			}
		}
	})
}

// FuzzCgroup2Root: the agent's own mountinfo, whatever a container runtime
// mounted in its namespace. Never a panic, and an answer is the mount
// point of a whole cgroup2 hierarchy the input lists.
func FuzzCgroup2Root(f *testing.F) {
	f.Add([]byte("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"))
	f.Add([]byte("30 1 0:27 /x /y rw - cgroup2 cgroup2 rw\n41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"))
	f.Add([]byte(`1 2 0:3 / /a\040b rw - cgroup2 cgroup2 rw`))
	f.Add([]byte(" - cgroup2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := cgroup2Root(b)
		if err != nil {
			if got != "" {
				t.Fatalf("error %v with %q", err, got)
			}
			return
		}
		ms, _ := parseMountInfo(b)
		for _, m := range ms {
			if m.fsType == "cgroup2" && m.root == "/" {
				if m.point != got {
					t.Fatalf("cgroup2Root = %q, first whole cgroup2 mount is at %q", got, m.point)
				}
				return
			}
		}
		t.Fatalf("cgroup2Root = %q, but no whole cgroup2 mount is listed", got)
	})
}
