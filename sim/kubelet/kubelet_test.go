package kubelet

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

func get(t *testing.T, k *Kubelet, url, token string) (int, []byte) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(k.CAPEM()) {
		t.Fatal("CA does not parse")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: k.NodeName()}}}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// The secure port wants the token, the read-only port nothing; both send
// the PodList shape with what the test put, and stop listing a deleted pod.
func TestPods(t *testing.T) {
	k := Start(t, Options{ReadOnly: true})
	secure := fmt.Sprintf("https://127.0.0.1:%d/pods", k.SecurePort())
	if code, _ := get(t, k, secure, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d, want 401", code)
	}
	if code, _ := get(t, k, secure, ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	uid := NewUID()
	k.PutPod(Pod{Name: "p", Namespace: "ns", UID: uid, ServiceAccount: "sa", NodeName: "n",
		Labels:     map[string]string{"a": "b"},
		Owners:     []Owner{{Kind: "ReplicaSet", Name: "rs", UID: "u"}},
		Containers: []Container{{Name: "c", Image: "img:1", ImageID: "docker://sha256:00", ContainerID: "docker://ab"}, {Name: "waiting", Image: "img:2"}}})
	code, body := get(t, k, secure, k.Token())
	if code != http.StatusOK {
		t.Fatalf("right token: %d %s", code, body)
	}
	var list struct {
		Kind  string `json:"kind"`
		Items []struct {
			Metadata struct {
				UID             string            `json:"uid"`
				Labels          map[string]string `json:"labels"`
				OwnerReferences []struct{ Kind, Name, UID string }
			}
			Spec struct {
				ServiceAccountName string `json:"serviceAccountName"`
				NodeName           string `json:"nodeName"`
				Containers         []struct{ Name, Image string }
			}
			Status struct {
				ContainerStatuses []struct {
					Name, Image, ImageID, ContainerID string
					State                             map[string]json.RawMessage
				}
			}
		}
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "PodList" || len(list.Items) != 1 {
		t.Fatalf("list: %s", body)
	}
	p := list.Items[0]
	cs := p.Status.ContainerStatuses
	if p.Metadata.UID != uid || p.Metadata.Labels["a"] != "b" || len(p.Metadata.OwnerReferences) != 1 ||
		p.Spec.ServiceAccountName != "sa" || p.Spec.NodeName != "n" || len(p.Spec.Containers) != 2 ||
		len(cs) != 2 || cs[0].ContainerID != "docker://ab" || cs[0].ImageID != "docker://sha256:00" ||
		cs[0].State["running"] == nil || cs[1].ContainerID != "" || cs[1].State["waiting"] == nil {
		t.Fatalf("pod: %s", body)
	}
	ro := fmt.Sprintf("http://127.0.0.1:%d/pods", k.ReadOnlyPort())
	resp, err := http.Get(ro)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("read-only port: %d", resp.StatusCode)
	}
	if k.Served() != 2 {
		t.Fatalf("served %d, want 2", k.Served())
	}
	k.DeletePod(uid)
	_, body = get(t, k, secure, k.Token())
	if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 0 {
		t.Fatalf("after delete: %s", body)
	}
}
