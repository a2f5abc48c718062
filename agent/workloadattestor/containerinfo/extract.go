package containerinfo

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Info is the pod and container a process belongs to ("" where none).
type Info struct {
	// PodUID is the Kubernetes pod UID in its canonical 8-4-4-4-12 form
	// with dashes, whichever cgroup driver rendered it.
	PodUID string
	// ContainerID is the 64-hex-digit container ID.
	ContainerID string
}

// ErrConflict is wrapped by the error for a process whose cgroups name two
// different containers or pods: choosing either could hand out another
// workload's identity, so the locator chooses neither.
var ErrConflict = errors.New("containerinfo: conflicting container identities")

var (
	// A container ID is 64 hex digits by convention of every runtime, as a
	// whole word: "docker-<id>.scope", "cri-containerd-<id>.scope",
	// "crio-<id>.scope", "/docker/<id>", "/kubepods/.../<id>".
	reContainerID = regexp.MustCompile(`\b([[:xdigit:]]{64})\b`)
	// A pod UID follows "pod": with dashes from the cgroupfs driver
	// (".../pod1234abcd-..."), with underscores from the systemd one, which
	// reserves "-" for slice nesting ("kubepods-besteffort-pod1234abcd_....slice").
	rePodUID = regexp.MustCompile(`\bpod([[:xdigit:]]{8}[-_][[:xdigit:]]{4}[-_][[:xdigit:]]{4}[-_][[:xdigit:]]{4}[-_][[:xdigit:]]{12})\b`)
)

// Extract finds a pod UID (when wantPodUID) and a container ID in cgroup
// paths or cgroup mount roots, with SPIRE's "new container locator" rules:
//
//   - in each path, the container ID is the last path element holding 64
//     hex digits as a word, and the pod UID the nearest "pod<uid>" before
//     it (in the rest of that element or in the elements before);
//   - a path with a pod UID outranks one without (under kind, a node
//     container's own cgroup appears beside the pod's);
//   - two different pod UIDs, or two different container IDs, are an
//     error wrapping ErrConflict.
//
// A path that names no container ("/", "/system.slice/containerd.service")
// says nothing about which one the process is in and is passed over. SPIRE
// 1.13 counted it as a conflicting empty ID when it came after one that did
// name a container, so the answer hung on line order and hosts with
// "3:rdma:/" or "0::/system.slice/crio.service" beside the container's
// lines failed; SPIRE 1.14 skips such mount roots too.
func Extract(paths []string, wantPodUID bool) (Info, error) {
	var got Info
	for _, p := range paths {
		cur := extract(p, wantPodUID)
		if cur.ContainerID == "" {
			continue
		}
		switch {
		case got.PodUID != "" && cur.PodUID == "":
			continue
		case got.PodUID == "" && cur.PodUID != "":
			got = cur
		}
		if got.PodUID != cur.PodUID {
			return Info{}, fmt.Errorf("%w: multiple pod UIDs found (%q, %q)", ErrConflict, got.PodUID, cur.PodUID)
		}
		if got.ContainerID != "" && got.ContainerID != cur.ContainerID {
			return Info{}, fmt.Errorf("%w: multiple container IDs found (%q, %q)", ErrConflict, got.ContainerID, cur.ContainerID)
		}
		got = cur
	}
	return got, nil
}

// extract applies the rules to one path. Elements are walked from the
// last; an empty element (the leading "/", or "//") ends the walk, so a
// path with a trailing slash names nothing.
func extract(p string, wantPodUID bool) Info {
	elems := strings.Split(p, "/")
	i := len(elems) - 1
	var info Info
	var rest string
	for ; i >= 0 && elems[i] != ""; i-- {
		if m := reContainerID.FindStringSubmatchIndex(elems[i]); m != nil {
			info.ContainerID = elems[i][m[2]:m[3]]
			rest = elems[i][:m[2]]
			break
		}
	}
	if info.ContainerID == "" || !wantPodUID {
		return info
	}
	// The pod UID may share the container's element
	// ("pod<uid>:cri-containerd:<id>") or sit in any element before it.
	if rest == "" {
		i--
		if i < 0 {
			return info
		}
		rest = elems[i]
	}
	for rest != "" {
		if m := rePodUID.FindStringSubmatch(rest); m != nil {
			info.PodUID = strings.ReplaceAll(m[1], "_", "-")
			break
		}
		i--
		if i < 0 {
			break
		}
		rest = elems[i]
	}
	return info
}

// hasContainerID reports whether any path names a container at all.
func hasContainerID(paths []string) bool {
	for _, p := range paths {
		if extract(p, false).ContainerID != "" {
			return true
		}
	}
	return false
}
