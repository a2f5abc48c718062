package k8s

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func client(t *testing.T, c *Cluster) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CAPEM()) {
		t.Fatal("CA PEM")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
}

func call(t *testing.T, c *Cluster, method, path, bearer string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, c.URL()+path, bytes.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client(t, c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// TestAPI checks the simulator behaves as kube-apiserver does for the
// calls the attestor makes.
func TestAPI(t *testing.T) {
	c, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.PutNode(Node{Name: "n", UID: "node-uid", InternalIP: "10.0.0.1"})
	c.PutPod(Pod{Namespace: "ns", Name: "p", UID: "pod-uid", ServiceAccount: "sa", NodeName: "n", HostIP: "10.0.0.1"})
	tok, err := c.MintToken("ns", "p", []string{"spire-server"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	review := func(aud ...string) TokenReview {
		b, _ := json.Marshal(TokenReview{Spec: TokenReviewSpec{Token: tok, Audiences: aud}})
		code, out := call(t, c, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", c.BearerToken(), b)
		if code != http.StatusCreated {
			t.Fatalf("TokenReview: %d %s", code, out)
		}
		var tr TokenReview
		if err := json.Unmarshal(out, &tr); err != nil {
			t.Fatal(err)
		}
		return tr
	}
	tr := review("spire-server", "other")
	u := tr.Status.User
	if !tr.Status.Authenticated || u.Username != "system:serviceaccount:ns:sa" || u.Extra[ExtraPodUID][0] != "pod-uid" ||
		u.Extra[ExtraPodName][0] != "p" || u.Extra[ExtraNodeUID][0] != "node-uid" || strings.Join(tr.Status.Audiences, ",") != "spire-server" {
		t.Fatalf("review: %+v", tr.Status)
	}
	if tr := review("vault"); tr.Status.Authenticated || !strings.Contains(tr.Status.Error, "audiences") {
		t.Fatalf("wrong audience: %+v", tr.Status)
	}
	if tr := review(); tr.Status.Authenticated {
		t.Fatal("a spire-server token passed for the API server's own audience")
	}
	for _, r := range []struct {
		method, path, bearer string
		body                 []byte
		code                 int
	}{
		{"GET", "/api/v1/namespaces/ns/pods/p", "", nil, 401},
		{"GET", "/api/v1/namespaces/ns/pods/p", "wrong", nil, 401},
		{"GET", "/api/v1/namespaces/ns/pods/p", c.BearerToken(), nil, 200},
		{"GET", "/api/v1/namespaces/ns/pods/q", c.BearerToken(), nil, 404},
		{"GET", "/api/v1/nodes/n", c.BearerToken(), nil, 200},
		{"GET", "/api/v1/nodes/m", c.BearerToken(), nil, 404},
		{"POST", "/apis/authentication.k8s.io/v1/tokenreviews", c.BearerToken(), []byte("{"), 400},
		{"POST", "/apis/authentication.k8s.io/v1/tokenreviews", c.BearerToken(), []byte(`{"spec":{}}`), 422},
		{"POST", "/apis/authentication.k8s.io/v1/tokenreviews", c.BearerToken(), bytes.Repeat([]byte(" "), MaxRequestBody+1), 400},
		{"DELETE", "/api/v1/nodes/n", c.BearerToken(), nil, 405},
	} {
		if code, out := call(t, c, r.method, r.path, r.bearer, r.body); code != r.code {
			t.Errorf("%s %s: %d %s, want %d", r.method, r.path, code, out, r.code)
		}
	}
	// Deleting the pod invalidates its token, as bound tokens are.
	c.DeletePod("ns", "p")
	if tr := review("spire-server"); tr.Status.Authenticated {
		t.Fatal("token of a deleted pod authenticated")
	}
}
