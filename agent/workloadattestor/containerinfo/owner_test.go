package containerinfo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
)

// TestRootOwned: a path outside this process's cgroup namespace cannot be
// checked through its cgroup mount and is passed rather than refused, so
// an agent in a private cgroup namespace still attests; one inside it is
// checked all the way down.
func TestRootOwned(t *testing.T) {
	const id = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	outside := []Cgroup{{HierarchyID: "0", Path: "/../../kubepods/pod1/" + id}}
	if err := RootOwned(outside, id); err != nil {
		t.Fatalf("a path outside the cgroup namespace: %v", err)
	}
	if err := RootOwned([]Cgroup{{HierarchyID: "4", Controllers: []string{"memory"}, Path: "/x/" + id}}, id); err != nil {
		t.Fatalf("a v1 path: %v", err)
	}
	g := cgrouptest.New(t, "spirehw-owner-"+filepathBase(t)+"/"+id)
	path := []Cgroup{{HierarchyID: "0", Path: "/" + g.Rel}}
	if err := RootOwned(path, id); err != nil {
		t.Fatalf("root's own cgroup: %v", err)
	}
	if err := os.Lchown(filepath.Dir(g.Dirs[0]), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := RootOwned(path, id); !errors.Is(err, ErrDelegated) {
		t.Fatalf("beneath a user's cgroup: %v, want ErrDelegated", err)
	}
}

func filepathBase(t *testing.T) string { return filepath.Base(t.TempDir()) }
