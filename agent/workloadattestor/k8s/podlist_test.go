package k8s

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	idA = strings.Repeat("a", 64)
	idB = strings.Repeat("b", 64)
	idI = strings.Repeat("c", 64)
)

// A pod list in the kubelet's shape, trimmed to what matters, with a
// second pod that shares nothing with the first.
var podListJSON = `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
 {"metadata":{"name":"blog-24ck7","namespace":"default","uid":"2c48913c-b29f-11e7-9350-020968147796",
   "labels":{"version":"v0","k8s-app":"blog"},
   "ownerReferences":[{"apiVersion":"v1","kind":"ReplicationController","name":"blog","uid":"2c401175-b29f-11e7-9350-020968147796","controller":true}]},
  "spec":{"serviceAccountName":"default","nodeName":"k8s-node-1","containers":[{"name":"blog","image":"localhost/spiffe/blog:latest"}]},
  "status":{"phase":"Running",
   "initContainerStatuses":[{"name":"init","image":"busybox:1","imageID":"docker-pullable://busybox@sha256:11","containerID":"docker://` + strings.Repeat("c", 64) + `"}],
   "containerStatuses":[
    {"name":"blog","image":"localhost/spiffe/blog:latest","imageID":"docker-pullable://localhost/spiffe/blog@sha256:0c","containerID":"docker://` + strings.Repeat("a", 64) + `","ready":true},
    {"name":"ghostunnel","image":"localhost/spiffe/ghostunnel:latest","imageID":"docker-pullable://localhost/spiffe/ghostunnel@sha256:b2","containerID":"containerd://` + strings.Repeat("b", 64) + `"},
    {"name":"starting","image":"localhost/spiffe/blog:latest","imageID":""}]}},
 {"metadata":{"name":"nouid","namespace":"default"}},
 {"metadata":{"name":"other","namespace":"kube-system","uid":"d488cae9-b2a0-11e7-9350-020968147796"},
  "spec":{"serviceAccountName":"flannel","nodeName":"k8s-node-1"},
  "status":{"containerStatuses":[{"name":"x","image":"x:1","imageID":"x@sha256:ff","containerID":"docker://` + strings.Repeat("d", 64) + `"}]}}
]}`

func TestParsePodList(t *testing.T) {
	var skipped []string
	idx, err := parsePodList([]byte(podListJSON), time.Now(), func(name string, err error) {
		if !errors.Is(err, errNoUID) {
			t.Errorf("skipped %s: %v", name, err)
		}
		skipped = append(skipped, name)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(skipped, []string{"default/nouid"}) {
		t.Errorf("skipped %q", skipped)
	}
	pod := []string{
		"sa:default", "ns:default", "node-name:k8s-node-1", "pod-uid:2c48913c-b29f-11e7-9350-020968147796", "pod-name:blog-24ck7",
		"pod-image-count:3", "pod-init-image-count:1",
		// Empty imageID of the container not started yet: SPIRE emits it too.
		"pod-image:",
		"pod-image:docker-pullable://localhost/spiffe/blog@sha256:0c",
		"pod-image:docker-pullable://localhost/spiffe/ghostunnel@sha256:b2",
		"pod-image:localhost/spiffe/blog:latest",
		"pod-image:localhost/spiffe/ghostunnel:latest",
		"pod-init-image:busybox:1", "pod-init-image:docker-pullable://busybox@sha256:11",
		"pod-label:k8s-app:blog", "pod-label:version:v0",
		"pod-owner:ReplicationController:blog", "pod-owner-uid:ReplicationController:2c401175-b29f-11e7-9350-020968147796",
	}
	for _, tc := range []struct {
		name           string
		podUID, cid    string
		podOnly        bool
		want           []string
		wantFound      bool
		wantErrContain string
	}{
		{name: "container", podUID: "2c48913c-b29f-11e7-9350-020968147796", cid: idA, wantFound: true,
			want: append(slices.Clone(pod), "container-name:blog", "container-image:docker-pullable://localhost/spiffe/blog@sha256:0c", "container-image:localhost/spiffe/blog:latest")},
		{name: "containerd container", podUID: "2c48913c-b29f-11e7-9350-020968147796", cid: idB, wantFound: true,
			want: append(slices.Clone(pod), "container-name:ghostunnel", "container-image:docker-pullable://localhost/spiffe/ghostunnel@sha256:b2", "container-image:localhost/spiffe/ghostunnel:latest")},
		{name: "init container", podUID: "2c48913c-b29f-11e7-9350-020968147796", cid: idI, wantFound: true,
			want: append(slices.Clone(pod), "container-name:init", "container-image:busybox:1", "container-image:docker-pullable://busybox@sha256:11")},
		{name: "pod unknown to cgroups (cri-o)", cid: idA, wantFound: true,
			want: append(slices.Clone(pod), "container-name:blog", "container-image:docker-pullable://localhost/spiffe/blog@sha256:0c", "container-image:localhost/spiffe/blog:latest")},
		{name: "container of another pod", podUID: "d488cae9-b2a0-11e7-9350-020968147796", cid: idA},
		{name: "unknown container", podUID: "2c48913c-b29f-11e7-9350-020968147796", cid: strings.Repeat("e", 64)},
		{name: "unknown container, pod only", podUID: "2c48913c-b29f-11e7-9350-020968147796", cid: strings.Repeat("e", 64), podOnly: true, wantFound: true, want: pod},
		{name: "known container, pod only", podUID: "2c48913c-b29f-11e7-9350-020968147796", cid: idA, podOnly: true, wantFound: true, want: pod},
		{name: "unknown pod", podUID: "00000000-0000-0000-0000-000000000000", cid: idA, podOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups, found, err := idx.lookup(tc.podUID, tc.cid, tc.podOnly)
			if err != nil || found != tc.wantFound {
				t.Fatalf("found %v, err %v; want found %v", found, err, tc.wantFound)
			}
			if got := slices.Concat(groups...); !slices.Equal(got, tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// One container ID in two pods: with the pod UID from the cgroups only that
// pod counts; without it, SPIRE's refusal.
func TestParsePodListDuplicateContainer(t *testing.T) {
	list := `{"items":[
	 {"metadata":{"name":"a","uid":"u1"},"status":{"containerStatuses":[{"name":"a","containerID":"cri-o://` + idA + `"}]}},
	 {"metadata":{"name":"b","uid":"u2"},"status":{"containerStatuses":[{"name":"b","containerID":"cri-o://` + idA + `"}]}}]}`
	idx, err := parsePodList([]byte(list), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := idx.lookup("", idA, false); !errors.Is(err, errAmbiguous) {
		t.Fatalf("err = %v, want errAmbiguous", err)
	}
	g, found, err := idx.lookup("u2", idA, false)
	if err != nil || !found || !slices.Contains(g[0], "pod-name:b") {
		t.Fatalf("got %q %v %v", g, found, err)
	}
}

// A pod listed twice under one UID is the later one, as in SPIRE's map,
// and the earlier one's containers go with it.
func TestParsePodListDuplicateUID(t *testing.T) {
	list := `{"items":[
	 {"metadata":{"name":"old","uid":"u1"},"status":{"containerStatuses":[{"name":"a","containerID":"docker://` + idA + `"}]}},
	 {"metadata":{"name":"new","uid":"u1"},"status":{"containerStatuses":[{"name":"b","containerID":"docker://` + idB + `"}]}}]}`
	idx, err := parsePodList([]byte(list), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := idx.lookup("", idA, false); found {
		t.Fatal("the replaced pod's container is still indexed")
	}
	if g, found, _ := idx.lookup("u1", idB, false); !found || !slices.Contains(g[0], "pod-name:new") {
		t.Fatalf("got %q", g)
	}
}

func TestParsePodListBad(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{"items":{}}`, `{"items":[{"metadata":{"uid":7}}]}`, `{"items":[{"metadata":{"labels":[]}}]}`} {
		if _, err := parsePodList([]byte(in), time.Now(), nil); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestRuntimeContainerID(t *testing.T) {
	for in, want := range map[string]string{
		"docker://" + idA:     idA,
		"containerd://" + idA: idA,
		"cri-o://" + idA:      idA,
		idA:                   "",
		"":                    "",
		"docker://%zz":        "",
	} {
		if got := runtimeContainerID(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
