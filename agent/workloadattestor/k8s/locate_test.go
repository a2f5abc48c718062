package k8s

import (
	"fmt"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
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
