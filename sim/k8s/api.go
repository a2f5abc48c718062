package k8s

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxRequestBody bounds a TokenReview request, as the API server does.
const MaxRequestBody = 1 << 20

// The wire types below are the parts of the Kubernetes objects the
// attestor uses, with the API's JSON names.

// TokenReview is an authentication.k8s.io/v1 TokenReview.
type TokenReview struct {
	Kind       string            `json:"kind,omitempty"`
	APIVersion string            `json:"apiVersion,omitempty"`
	Spec       TokenReviewSpec   `json:"spec"`
	Status     TokenReviewStatus `json:"status"`
}

// TokenReviewSpec is what the client asks to review.
type TokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

// TokenReviewStatus is the API server's verdict.
type TokenReviewStatus struct {
	Authenticated bool     `json:"authenticated"`
	User          UserInfo `json:"user"`
	Audiences     []string `json:"audiences,omitempty"`
	Error         string   `json:"error,omitempty"`
}

// UserInfo is the authenticated user of a token.
type UserInfo struct {
	Username string              `json:"username,omitempty"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// Extra keys the API server sets for tokens bound to a pod.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
	ExtraNodeUID  = "authentication.kubernetes.io/node-uid"
	ExtraCredID   = "authentication.kubernetes.io/credential-id"
)

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	UID       string            `json:"uid"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type podObject struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		NodeName           string `json:"nodeName,omitempty"`
		ServiceAccountName string `json:"serviceAccountName,omitempty"`
	} `json:"spec"`
	Status struct {
		Phase  string `json:"phase"`
		HostIP string `json:"hostIP,omitempty"`
	} `json:"status"`
}

type nodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

type nodeObject struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   objectMeta `json:"metadata"`
	Status     struct {
		Addresses []nodeAddress `json:"addresses,omitempty"`
	} `json:"status"`
}

type statusObject struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Status     string `json:"status"`
	Message    string `json:"message"`
	Reason     string `json:"reason"`
	Code       int    `json:"code"`
}

func (c *Cluster) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", c.tokenReview)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", c.getPod)
	mux.HandleFunc("GET /api/v1/nodes/{name}", c.getNode)
	return c.authenticate(mux)
}

// authenticate admits only the configured bearer token, as RBAC would
// admit only the SPIRE server's service account.
func (c *Cluster) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(c.opts.BearerToken)) != 1 {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, statusObject{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: msg, Reason: reason, Code: code})
}

func (c *Cluster) tokenReview(w http.ResponseWriter, r *http.Request) {
	var tr TokenReview
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	if err := dec.Decode(&tr); err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("decode TokenReview: %v", err))
		return
	}
	if tr.Spec.Token == "" {
		writeStatus(w, http.StatusUnprocessableEntity, "Invalid", "spec.token: Required value")
		return
	}
	out := TokenReview{Kind: "TokenReview", APIVersion: "authentication.k8s.io/v1", Spec: tr.Spec}
	user, auds, err := c.review(tr.Spec.Token, tr.Spec.Audiences)
	if err != nil {
		// The API server answers 201 with authenticated=false; the reason
		// goes in status.error.
		out.Status = TokenReviewStatus{Error: err.Error()}
	} else {
		out.Status = TokenReviewStatus{Authenticated: true, User: *user, Audiences: auds}
	}
	writeJSON(w, http.StatusCreated, out)
}

// review verifies a service-account token as kube-apiserver does.
func (c *Cluster) review(token string, specAuds []string) (*UserInfo, []string, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{c.alg})
	if err != nil {
		return nil, nil, fmt.Errorf("invalid bearer token: %w", err)
	}
	var claims Claims
	if err := tok.Claims(c.key.Public(), &claims); err != nil {
		return nil, nil, fmt.Errorf("invalid bearer token: %w", err)
	}
	now := c.opts.Now().Unix()
	switch {
	case claims.Issuer != c.opts.Issuer:
		return nil, nil, errors.New("invalid bearer token: wrong issuer")
	case claims.Expiry == 0 || now >= claims.Expiry:
		return nil, nil, errors.New("invalid bearer token: token has expired")
	case claims.NotBefore != 0 && now < claims.NotBefore:
		return nil, nil, errors.New("invalid bearer token: token not valid yet")
	}
	want := specAuds
	if len(want) == 0 || c.opts.IgnoreSpecAudiences {
		want = c.opts.APIAudiences
	}
	var auds []string
	for _, a := range claims.Audience {
		if slices.Contains(want, a) && !slices.Contains(auds, a) {
			auds = append(auds, a)
		}
	}
	if len(auds) == 0 {
		return nil, nil, errors.New("invalid bearer token: token audiences is invalid for the target audiences")
	}
	k := claims.Kube
	if k == nil || k.Namespace == "" || k.ServiceAccount.Name == "" {
		return nil, nil, errors.New("invalid bearer token: not a service account token")
	}
	if claims.Subject != "system:serviceaccount:"+k.Namespace+":"+k.ServiceAccount.Name {
		return nil, nil, errors.New("invalid bearer token: subject does not match the service account")
	}
	if !c.opts.DisableLookup {
		if err := c.checkBound(k); err != nil {
			return nil, nil, fmt.Errorf("invalid bearer token: %w", err)
		}
	}
	user := &UserInfo{
		Username: claims.Subject,
		UID:      k.ServiceAccount.UID,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + k.Namespace, "system:authenticated"},
		Extra:    map[string][]string{},
	}
	if claims.ID != "" {
		user.Extra[ExtraCredID] = []string{"JTI=" + claims.ID}
	}
	if k.Pod != nil {
		user.Extra[ExtraPodName] = []string{k.Pod.Name}
		user.Extra[ExtraPodUID] = []string{k.Pod.UID}
	}
	if k.Node != nil {
		user.Extra[ExtraNodeName] = []string{k.Node.Name}
		user.Extra[ExtraNodeUID] = []string{k.Node.UID}
	}
	return user, auds, nil
}

// checkBound refuses a token whose pod or node was deleted or recreated.
func (c *Cluster) checkBound(k *KubernetesClaims) error {
	if k.ServiceAccount.UID != c.serviceAccountUID(k.Namespace, k.ServiceAccount.Name) {
		return errors.New("service account UID does not match")
	}
	if k.Pod != nil {
		p, ok := c.pod(k.Namespace, k.Pod.Name)
		if !ok {
			return fmt.Errorf("pod %q not found", k.Pod.Name)
		}
		if p.UID != k.Pod.UID {
			return fmt.Errorf("pod %q UID (%s) does not match claim (%s)", k.Pod.Name, p.UID, k.Pod.UID)
		}
	}
	if k.Node != nil {
		n, ok := c.node(k.Node.Name)
		if !ok {
			return fmt.Errorf("node %q not found", k.Node.Name)
		}
		if n.UID != k.Node.UID {
			return fmt.Errorf("node %q UID does not match claim", k.Node.Name)
		}
	}
	return nil
}

func (c *Cluster) getPod(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	p, ok := c.pod(ns, name)
	if !ok {
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", name))
		return
	}
	o := podObject{Kind: "Pod", APIVersion: "v1", Metadata: objectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels}}
	o.Spec.NodeName = p.NodeName
	o.Spec.ServiceAccountName = p.ServiceAccount
	o.Status.Phase = "Running"
	o.Status.HostIP = p.HostIP
	writeJSON(w, http.StatusOK, o)
}

func (c *Cluster) getNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, ok := c.node(name)
	if !ok {
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("nodes %q not found", name))
		return
	}
	o := nodeObject{Kind: "Node", APIVersion: "v1", Metadata: objectMeta{Name: n.Name, UID: n.UID, Labels: n.Labels}}
	if n.InternalIP != "" {
		o.Status.Addresses = []nodeAddress{{Type: "InternalIP", Address: n.InternalIP}, {Type: "Hostname", Address: n.Name}}
	}
	writeJSON(w, http.StatusOK, o)
}
