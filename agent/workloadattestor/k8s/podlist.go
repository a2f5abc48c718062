package k8s

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// The kubelet's /pods answer is a v1 PodList. Only the fields SPIRE turns
// into selectors are decoded; everything else is skipped by the decoder, so
// no Kubernetes module is needed.
type podList struct {
	Items []pod `json:"items"`
}

type pod struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		UID             string            `json:"uid"`
		Labels          map[string]string `json:"labels"`
		OwnerReferences []struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"ownerReferences"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string `json:"serviceAccountName"`
		NodeName           string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		ContainerStatuses     []containerStatus `json:"containerStatuses"`
		InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name        string `json:"name"`
	Image       string `json:"image"`
	ImageID     string `json:"imageID"`
	ContainerID string `json:"containerID"`
}

// podIndex is one fetched pod list, turned into selector values once so
// that an attestation served from it is a map lookup.
type podIndex struct {
	// fetched is when the request that produced the list was sent: a list
	// fetched before a container started cannot be trusted to show it.
	fetched time.Time
	pods    map[string]*podEntry
	// byContainer lists the pods whose statuses name a container ID, for
	// runtimes that do not put the pod UID in the cgroup path.
	byContainer map[string][]*podEntry
}

type podEntry struct {
	uid string
	// values are the pod's selector values, in SPIRE's order.
	values []string
	// containers maps a runtime container ID (the host part of the
	// status's containerID URL, as SPIRE takes it) to that container's
	// selector values.
	containers map[string][]string
}

// maxPodListBytes bounds what is read from the kubelet: a node's pod list
// is a few megabytes at most (110 pods by default).
const maxPodListBytes = 64 << 20

// errNoUID is logged, not returned: SPIRE skips such pods too.
var errNoUID = errors.New("pod has no metadata.uid")

// parsePodList decodes a kubelet /pods answer. skipped receives each pod
// that could not be indexed, with why.
func parsePodList(b []byte, fetched time.Time, skipped func(name string, err error)) (*podIndex, error) {
	var list podList
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("decode kubelet pod list: %w", err)
	}
	idx := &podIndex{
		fetched:     fetched,
		pods:        make(map[string]*podEntry, len(list.Items)),
		byContainer: make(map[string][]*podEntry),
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Metadata.UID == "" {
			if skipped != nil {
				skipped(p.Metadata.Namespace+"/"+p.Metadata.Name, errNoUID)
			}
			continue
		}
		e := newPodEntry(p)
		// A later duplicate UID replaces an earlier one, as in SPIRE's map.
		if old := idx.pods[e.uid]; old != nil {
			for id := range old.containers {
				idx.byContainer[id] = slices.DeleteFunc(idx.byContainer[id], func(x *podEntry) bool { return x == old })
			}
		}
		idx.pods[e.uid] = e
		for id := range e.containers {
			idx.byContainer[id] = append(idx.byContainer[id], e)
		}
	}
	return idx, nil
}

func newPodEntry(p *pod) *podEntry {
	e := &podEntry{uid: p.Metadata.UID, containers: map[string][]string{}}
	v := []string{
		"sa:" + p.Spec.ServiceAccountName,
		"ns:" + p.Metadata.Namespace,
		"node-name:" + p.Spec.NodeName,
		"pod-uid:" + p.Metadata.UID,
		"pod-name:" + p.Metadata.Name,
		"pod-image-count:" + strconv.Itoa(len(p.Status.ContainerStatuses)),
		"pod-init-image-count:" + strconv.Itoa(len(p.Status.InitContainerStatuses)),
	}
	for _, img := range imageIdentifiers(p.Status.ContainerStatuses) {
		v = append(v, "pod-image:"+img)
	}
	for _, img := range imageIdentifiers(p.Status.InitContainerStatuses) {
		v = append(v, "pod-init-image:"+img)
	}
	keys := make([]string, 0, len(p.Metadata.Labels))
	for k := range p.Metadata.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v = append(v, "pod-label:"+k+":"+p.Metadata.Labels[k])
	}
	for _, o := range p.Metadata.OwnerReferences {
		v = append(v, "pod-owner:"+o.Kind+":"+o.Name, "pod-owner-uid:"+o.Kind+":"+o.UID)
	}
	e.values = v

	// SPIRE looks through the regular containers before the init ones and
	// takes the first match; keep the first entry for an ID.
	for _, statuses := range [][]containerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses} {
		for i := range statuses {
			s := &statuses[i]
			id := runtimeContainerID(s.ContainerID)
			if id == "" {
				continue
			}
			if _, ok := e.containers[id]; ok {
				continue
			}
			cv := []string{"container-name:" + s.Name}
			for _, img := range imageIdentifiers(statuses[i : i+1]) {
				cv = append(cv, "container-image:"+img)
			}
			e.containers[id] = cv
		}
	}
	return e
}

// imageIdentifiers returns each status's imageID and image (the digest form
// and the tag form, so an entry can name either), without duplicates, in a
// stable order: SPIRE's comes from a Go map and so has none.
func imageIdentifiers(statuses []containerStatus) []string {
	out := make([]string, 0, 2*len(statuses))
	for _, s := range statuses {
		out = append(out, s.ImageID, s.Image)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// runtimeContainerID turns a status's "docker://<id>" (or containerd://,
// cri-o://) into the bare ID, the way SPIRE does: the URL's host. A status
// without an ID (a container not started yet) or one that is not a URL
// gives "".
func runtimeContainerID(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Host
}

// errAmbiguous is SPIRE's refusal when one container ID is listed in two
// pods: which pod's selectors apply cannot be told.
var errAmbiguous = errors.New("two pods found with same container Id")

// lookup returns the selector values for a container, or found=false. With
// podUID known only that pod is considered, as in SPIRE. podOnly drops
// the container selectors (disable_container_selectors), and then a known
// pod whose container is not listed yet is enough.
func (idx *podIndex) lookup(podUID, containerID string, podOnly bool) (values [][]string, found bool, err error) {
	if podUID != "" {
		e := idx.pods[podUID]
		if e == nil {
			return nil, false, nil
		}
		cv, ok := e.containers[containerID]
		switch {
		case ok && !podOnly:
			return [][]string{e.values, cv}, true, nil
		case ok || podOnly:
			return [][]string{e.values}, true, nil
		}
		return nil, false, nil
	}
	entries := idx.byContainer[containerID]
	switch {
	case len(entries) == 0:
		return nil, false, nil
	case len(entries) > 1:
		return nil, false, errAmbiguous
	}
	e := entries[0]
	if podOnly {
		return [][]string{e.values}, true, nil
	}
	return [][]string{e.values, e.containers[containerID]}, true, nil
}
