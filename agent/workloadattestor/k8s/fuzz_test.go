package k8s

import (
	"testing"
	"time"
)

// The kubelet's answer is untrusted input: any bytes give a list or an
// error, never a panic, and every indexed pod has selector values.
func FuzzParsePodList(f *testing.F) {
	f.Add([]byte(podListJSON))
	f.Add([]byte(`{"items":[{"metadata":{"uid":"u"},"status":{"containerStatuses":[{"containerID":"docker://x"},{"containerID":"docker://x"}]}}]}`))
	f.Add([]byte(`{"items":null}`))
	f.Add([]byte(`{"items":[{"metadata":{"uid":"u","ownerReferences":[{}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := parsePodList(b, time.Now(), func(string, error) {})
		if err != nil {
			return
		}
		for uid, e := range idx.pods {
			if uid == "" || len(e.values) < 7 {
				t.Fatalf("pod %q indexed with %d values", uid, len(e.values))
			}
			for id := range e.containers {
				if _, found, err := idx.lookup(uid, id, false); !found || err != nil {
					t.Fatalf("container %q of pod %q not found: %v", id, uid, err)
				}
			}
		}
	})
}

// Cgroup paths come from the kernel but name what a workload chose (its
// cgroup names, under delegation): never a panic, and a match is well formed.
func FuzzLegacyFromPath(f *testing.F) {
	f.Add("/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961")
	f.Add("/../crio-45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814.scope")
	f.Add("/kubepods-besteffort-pod72f7f152_440c_66ac_9084_e0fc1d8a910c.slice:cri-containerd:b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2")
	f.Fuzz(func(t *testing.T, path string) {
		_, cid, ok := legacyFromPath(path)
		if ok && len(cid) != 64 {
			t.Fatalf("container ID %q from %q", cid, path)
		}
	})
}
