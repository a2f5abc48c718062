package k8s

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// The legacy locator (use_new_container_locator = false) reads each cgroup
// path on its own, as SPIRE's did before the new locator: a "pod"-prefixed
// UID (its groups separated by any punctuation, or by none) followed, after
// any punctuation-separated segments such as "docker-", by a 64-hex
// container ID that ends the path; or, for cri-o under KubeEdge, which puts
// no pod UID in the path, "crio" and punctuation before the container ID.
const (
	hex4    = `[[:xdigit:]]{4}`
	podUIDs = `[[:xdigit:]]{8}[[:punct:]]?` + hex4 + `[[:punct:]]?` + hex4 + `[[:punct:]]?` + hex4 + `[[:punct:]]?[[:xdigit:]]{12}`
)

var (
	legacyPodRE = regexp.MustCompile(`[[:punct:]]pod(` + podUIDs + `)[[:punct:]](?:[[:^punct:]]+[[:punct:]])*([[:xdigit:]]{64})$`)
	// A cri-o match only counts when no pod UID leads it (group 1): the
	// first form owns those paths.
	legacyCrioRE = regexp.MustCompile(`(pod` + podUIDs + `[[:punct:]])?(?:[[:^punct:]]*/*)*crio[[:punct:]]([[:xdigit:]]{64})$`)
)

// legacyFromPath returns the pod UID ("" for cri-o) and container ID one
// cgroup path names, or ok=false.
func legacyFromPath(path string) (podUID, containerID string, ok bool) {
	path = strings.TrimSuffix(path, ".scope")
	var hits int
	if m := legacyPodRE.FindStringSubmatch(path); m != nil {
		podUID, containerID = canonicalPodUID(m[1]), m[2]
		hits++
	}
	if m := legacyCrioRE.FindStringSubmatch(path); m != nil && m[1] == "" {
		podUID, containerID = "", m[2]
		hits++
	}
	if hits != 1 {
		// Both forms at once: the path is too odd to trust either.
		return "", "", false
	}
	return podUID, containerID, true
}

// legacyLocate applies legacyFromPath to every cgroup path; all that name a
// container must name the same one.
func legacyLocate(paths []string) (podUID, containerID string, err error) {
	for _, p := range paths {
		pu, cid, ok := legacyFromPath(p)
		switch {
		case !ok:
			continue
		case containerID == "":
			podUID, containerID = pu, cid
		case cid != containerID:
			return "", "", fmt.Errorf("multiple container IDs found in cgroups (%s, %s)", containerID, cid)
		case pu != podUID:
			return "", "", fmt.Errorf("multiple pod UIDs found in cgroups (%s, %s)", podUID, pu)
		}
	}
	return podUID, containerID, nil
}

// canonicalPodUID writes a UID as Kubernetes does: whatever punctuation the
// cgroup driver used ("_" for systemd) becomes "-".
func canonicalPodUID(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPunct(r) {
			return '-'
		}
		return r
	}, s)
}
