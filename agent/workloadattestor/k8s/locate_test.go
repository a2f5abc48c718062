package k8s

import (
	"fmt"
	"os"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"golang.org/x/sys/unix"
)

func proc(paths ...string) containerinfo.Proc {
	var p containerinfo.Proc
	for i, s := range paths {
		p.Cgroups = append(p.Cgroups, containerinfo.Cgroup{HierarchyID: fmt.Sprint(i), Path: s})
	}
	return p
}

// The memo answers as Locate does, for hits and misses alike, does not keep
// errors, and stays bounded.
func TestLocateMemo(t *testing.T) {
	var l locateMemo
	for _, p := range []containerinfo.Proc{
		proc("/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/"+fmt.Sprintf("%064x", 1), "/"),
		proc("/", "/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/"+fmt.Sprintf("%064x", 1)),
		proc("/user.slice"),
		{Cgroups: proc("/").Cgroups, MountRoots: []string{"/kubepods/besteffort/pod11111111-2222-3333-4444-666666666666/" + fmt.Sprintf("%064x", 2)}},
	} {
		want, werr := p.Locate(true)
		for range 2 {
			got, err := l.locate(p)
			if got != want || (err == nil) != (werr == nil) {
				t.Fatalf("%+v: got %+v, %v; want %+v, %v", p, got, err, want, werr)
			}
		}
	}
	conflict := proc("/docker/"+fmt.Sprintf("%064x", 1), "/docker/"+fmt.Sprintf("%064x", 2))
	if _, err := l.locate(conflict); err == nil {
		t.Fatal("conflicting container IDs: no error")
	}
	if _, err := l.locate(conflict); err == nil {
		t.Fatal("conflicting container IDs: no error the second time")
	}
	for i := range maxLocated + 10 {
		if _, err := l.locate(proc(fmt.Sprintf("/docker/%064x", i))); err != nil {
			t.Fatal(err)
		}
	}
	if len(l.m) > maxLocated {
		t.Fatalf("memo holds %d entries, bound %d", len(l.m), maxLocated)
	}
}

// A cgroup ID is learnt only when the v2 path alone names the same pod and
// container and the directory there has that ID.
func TestLearnCgroup(t *testing.T) {
	a := &Attestor{cgroup2: t.TempDir()}
	path := "/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + fmt.Sprintf("%064x", 1)
	p := containerinfo.Proc{Cgroups: []containerinfo.Cgroup{
		{HierarchyID: "4", Controllers: []string{"memory"}, Path: path},
		{HierarchyID: "0", Path: path},
	}}
	info, err := p.Locate(true)
	if err != nil || info.ContainerID == "" {
		t.Fatalf("%+v %v", info, err)
	}
	// No directory at the path: nothing learnt.
	a.learnCgroup(7, p, info)
	if _, ok := a.located.byCgroupID(7); ok {
		t.Fatal("learnt an ID whose directory does not exist")
	}
	if err := os.MkdirAll(a.cgroup2+path, 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(a.cgroup2+path, &st); err != nil {
		t.Fatal(err)
	}
	a.learnCgroup(st.Ino+1, p, info)
	if _, ok := a.located.byCgroupID(st.Ino + 1); ok {
		t.Fatal("learnt an ID that is not the directory's")
	}
	other := info
	other.ContainerID = fmt.Sprintf("%064x", 2)
	a.learnCgroup(st.Ino, p, other)
	if _, ok := a.located.byCgroupID(st.Ino); ok {
		t.Fatal("learnt a container the v2 path does not name")
	}
	a.learnCgroup(st.Ino, p, info)
	if got, ok := a.located.byCgroupID(st.Ino); !ok || got != info {
		t.Fatalf("not learnt: %+v %v", got, ok)
	}
}
