package k8s

import (
	"strings"
	"testing"
)

// The paths SPIRE's legacy locator documents, and some it must refuse.
func TestLegacyFromPath(t *testing.T) {
	const (
		uid = "2c48913c-b29f-11e7-9350-020968147796"
		cid = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	)
	for _, tc := range []struct {
		path     string
		uid, cid string
		ok       bool
	}{
		{"/kubepods/burstable/pod" + uid + "/" + cid, uid, cid, true},
		{"/docker/8d461fa5765781bcf5f7eb192f101bc3103d4b932e26236f43feecfa20664f96/kubepods/besteffort/poddaa5c7ee-3484-4533-af39-3591564fd03e/aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934",
			"daa5c7ee-3484-4533-af39-3591564fd03e", "aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934", true},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice/docker-" + cid + ".scope", uid, cid, true},
		{"/kubepods-besteffort-pod72f7f152_440c_66ac_9084_e0fc1d8a910c.slice:cri-containerd:" + cid, "72f7f152-440c-66ac-9084-e0fc1d8a910c", cid, true},
		{"/../../pod" + uid + "/" + cid, uid, cid, true},
		{"/../crio-" + cid + ".scope", "", cid, true},
		{"/kubepods/burstable/pod" + uid + "/crio-" + cid, uid, cid, true},
		{"/docker/" + cid, "", "", false},
		{"/kubepods/burstable/pod" + uid, "", "", false},
		{"/kubepods/burstable/pod" + uid + "/" + cid[:63], "", "", false},
		{"/", "", "", false},
	} {
		u, c, ok := legacyFromPath(tc.path)
		if u != tc.uid || c != tc.cid || ok != tc.ok {
			t.Errorf("%s: got (%q, %q, %v), want (%q, %q, %v)", tc.path, u, c, ok, tc.uid, tc.cid, tc.ok)
		}
	}
}

func TestLegacyLocate(t *testing.T) {
	a := "/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + strings.Repeat("a", 64)
	b := "/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + strings.Repeat("b", 64)
	c := "/kubepods/besteffort/pod11111111-2222-3333-4444-666666666666/" + strings.Repeat("a", 64)
	if u, id, err := legacyLocate([]string{"/user.slice", a, a, "/"}); err != nil || id != strings.Repeat("a", 64) || u != "11111111-2222-3333-4444-555555555555" {
		t.Fatalf("got %q %q %v", u, id, err)
	}
	if _, _, err := legacyLocate([]string{a, b}); err == nil || !strings.Contains(err.Error(), "multiple container IDs") {
		t.Fatalf("two containers: %v", err)
	}
	if _, _, err := legacyLocate([]string{a, c}); err == nil || !strings.Contains(err.Error(), "multiple pod UIDs") {
		t.Fatalf("two pods: %v", err)
	}
	if u, id, err := legacyLocate([]string{"/user.slice/session-1.scope", "/"}); err != nil || u != "" || id != "" {
		t.Fatalf("not in a pod: %q %q %v", u, id, err)
	}
}
