// Package k8spsat verifies Kubernetes projected service account token
// (PSAT) attestation, compatible with SPIRE's "k8s_psat" plugin: the agent
// sends the token its pod was given; the server has the cluster's API
// server authenticate it (TokenReview, with the configured audiences),
// allows only listed service accounts, and reads the live pod and node.
// A token whose pod was deleted or recreated under the same name is
// refused, since the live pod's UID must be the one bound in the token.
//
// Agents are named spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>.
package k8spsat

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PluginName is the attestation type, the selector type and the plugin
// name in configs.
const PluginName = "k8s_psat"

// DefaultAudience is the audience tokens must carry when a cluster's
// config names none, SPIRE's default.
const DefaultAudience = "spire-server"

// MaxPayload bounds the attestation data; a PSAT is a few kilobytes.
const MaxPayload = 64 << 10

// AttestationData is the agent's payload, SPIRE's wire format.
type AttestationData struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
}

// ParseAttestationData decodes and checks a payload.
func ParseAttestationData(b []byte) (*AttestationData, error) {
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("k8spsat: attestation data larger than %d bytes", MaxPayload)
	}
	var d AttestationData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("k8spsat: attestation data: %w", err)
	}
	if d.Cluster == "" {
		return nil, errors.New("k8spsat: attestation data has no cluster")
	}
	if d.Token == "" {
		return nil, errors.New("k8spsat: attestation data has no token")
	}
	return &d, nil
}

// PluginData is the plugin_data block of NodeAttestor "k8s_psat".
type PluginData struct {
	Clusters map[string]ClusterData `hcl:"clusters"`
}

// ClusterData configures one cluster, keyed by the name agents send.
type ClusterData struct {
	ServiceAccountAllowList []string `hcl:"service_account_allow_list"`
	// Audience defaults to ["spire-server"]; an explicit [] means the API
	// server's own audiences.
	Audience *[]string `hcl:"audience"`
	// KubeConfigFile reaches an API server from outside the cluster.
	KubeConfigFile string `hcl:"kube_config_file"`
	// KubeAPIURL, KubeCAFile and KubeTokenFile name the API server
	// directly and take precedence over KubeConfigFile. Without any of
	// them the in-cluster configuration is used.
	KubeAPIURL           string   `hcl:"kube_api_url"`
	KubeCAFile           string   `hcl:"kube_ca_file"`
	KubeTokenFile        string   `hcl:"kube_token_file"`
	AllowedNodeLabelKeys []string `hcl:"allowed_node_label_keys"`
	AllowedPodLabelKeys  []string `hcl:"allowed_pod_label_keys"`
}

// Cluster is the verified configuration of one cluster.
type Cluster struct {
	Client *APIClient
	// Audience is sent in the TokenReview and must be echoed in its
	// status; empty leaves the audience to the API server.
	Audience []string
	// ServiceAccounts are "namespace:name" entries allowed to attest.
	ServiceAccounts      []string
	AllowedNodeLabelKeys []string
	AllowedPodLabelKeys  []string
}

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Clusters    map[string]*Cluster
}

// Attestor verifies PSATs.
type Attestor struct {
	td       spiffeid.TrustDomain
	clusters map[string]*cluster
}

type cluster struct {
	Cluster
	sas       map[string]bool
	nodeKeys  map[string]bool
	podKeys   map[string]bool
	audiences map[string]bool
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor. A config with no clusters admits nobody, as in
// SPIRE, but is refused here since it is always a mistake.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8spsat: trust domain is required")
	}
	if len(cfg.Clusters) == 0 {
		return nil, errors.New("k8spsat: at least one cluster must be configured")
	}
	a := &Attestor{td: cfg.TrustDomain, clusters: map[string]*cluster{}}
	for name, c := range cfg.Clusters {
		if c == nil || c.Client == nil {
			return nil, fmt.Errorf("k8spsat: cluster %q has no API client", name)
		}
		if len(c.ServiceAccounts) == 0 {
			return nil, fmt.Errorf("k8spsat: cluster %q: service_account_allow_list is required", name)
		}
		cc := &cluster{Cluster: *c, sas: set(c.ServiceAccounts), nodeKeys: set(c.AllowedNodeLabelKeys), podKeys: set(c.AllowedPodLabelKeys), audiences: set(c.Audience)}
		for sa := range cc.sas {
			if ns, n, ok := strings.Cut(sa, ":"); !ok || ns == "" || n == "" || strings.Contains(n, ":") {
				return nil, fmt.Errorf("k8spsat: cluster %q: service account %q is not namespace:name", name, sa)
			}
		}
		a.clusters[name] = cc
	}
	return a, nil
}

func set(l []string) map[string]bool {
	m := make(map[string]bool, len(l))
	for _, s := range l {
		m[s] = true
	}
	return m
}

// NewFromPluginData builds an Attestor from its plugin_data.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData) (*Attestor, error) {
	cfg := Config{TrustDomain: td, Clusters: map[string]*Cluster{}}
	for name, cd := range d.Clusters {
		cc, err := clientConfig(cd)
		if err != nil {
			return nil, fmt.Errorf("k8spsat: cluster %q: %w", name, err)
		}
		client, err := NewAPIClient(cc)
		if err != nil {
			return nil, fmt.Errorf("k8spsat: cluster %q: %w", name, err)
		}
		aud := []string{DefaultAudience}
		if cd.Audience != nil {
			aud = *cd.Audience
		}
		cfg.Clusters[name] = &Cluster{
			Client:               client,
			Audience:             aud,
			ServiceAccounts:      cd.ServiceAccountAllowList,
			AllowedNodeLabelKeys: cd.AllowedNodeLabelKeys,
			AllowedPodLabelKeys:  cd.AllowedPodLabelKeys,
		}
	}
	return New(cfg)
}

func clientConfig(cd ClusterData) (ClientConfig, error) {
	if cd.KubeAPIURL == "" {
		if cd.KubeCAFile != "" || cd.KubeTokenFile != "" {
			return ClientConfig{}, errors.New("kube_ca_file and kube_token_file need kube_api_url")
		}
		if cd.KubeConfigFile != "" {
			return LoadKubeconfig(cd.KubeConfigFile)
		}
		return InClusterConfig()
	}
	cc := ClientConfig{URL: cd.KubeAPIURL, TokenFile: cd.KubeTokenFile}
	if cd.KubeCAFile != "" {
		b, err := os.ReadFile(cd.KubeCAFile)
		if err != nil {
			return ClientConfig{}, fmt.Errorf("kube_ca_file: %w", err)
		}
		cc.CAPEM = b
	}
	return cc, nil
}

// Type implements nodeattestor.Attestor.
func (*Attestor) Type() string { return PluginName }

// AgentID is the ID of the agent on node nodeUID of cluster.
func AgentID(td spiffeid.TrustDomain, cluster, nodeUID string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "spire", "agent", PluginName, cluster, nodeUID)
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "k8spsat: "+format, args...)
}

// Attest implements nodeattestor.Attestor.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	d, err := ParseAttestationData(payload)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, ok := a.clusters[d.Cluster]
	if !ok {
		return nil, deny("cluster %q is not configured", d.Cluster)
	}
	st, err := c.Client.ReviewToken(ctx, d.Token, c.Audience)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "k8spsat: TokenReview: %v", err)
	}
	if !st.Authenticated {
		return nil, deny("token not authenticated by the API server: %s", st.Error)
	}
	// An API server that ignored spec.audiences would authenticate a
	// token meant for another service: the status must name one of ours.
	if len(c.Audience) > 0 && !slices.ContainsFunc(st.Audiences, func(s string) bool { return c.audiences[s] }) {
		return nil, deny("TokenReview status audiences %q include none of %q", st.Audiences, c.Audience)
	}
	ns, sa, err := serviceAccount(st.User.Username)
	if err != nil {
		return nil, deny("%v", err)
	}
	if !c.sas[ns+":"+sa] {
		return nil, deny("%q is not an allowed service account", ns+":"+sa)
	}
	podName, err := extra(st, "authentication.kubernetes.io/pod-name")
	if err != nil {
		return nil, deny("%v", err)
	}
	podUID, err := extra(st, "authentication.kubernetes.io/pod-uid")
	if err != nil {
		return nil, deny("%v", err)
	}
	pod, err := c.Client.GetPod(ctx, ns, podName)
	switch {
	case isNotFound(err):
		return nil, deny("pod %s/%s of the token no longer exists", ns, podName)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "k8spsat: %v", err)
	}
	if pod.Metadata.UID != podUID {
		return nil, deny("pod %s/%s has UID %s, not the token's %s: it was recreated", ns, podName, pod.Metadata.UID, podUID)
	}
	if pod.Spec.ServiceAccountName != "" && pod.Spec.ServiceAccountName != sa {
		return nil, deny("pod %s/%s runs as service account %q, not the token's %q", ns, podName, pod.Spec.ServiceAccountName, sa)
	}
	nodeName := pod.Spec.NodeName
	if nodeName == "" {
		return nil, deny("pod %s/%s is not scheduled on a node", ns, podName)
	}
	if n, ok := st.User.Extra["authentication.kubernetes.io/node-name"]; ok && (len(n) != 1 || n[0] != nodeName) {
		return nil, deny("the token is bound to node %q, the pod runs on %q", n, nodeName)
	}
	node, err := c.Client.GetNode(ctx, nodeName)
	switch {
	case isNotFound(err):
		return nil, deny("node %q of pod %s/%s does not exist", nodeName, ns, podName)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "k8spsat: %v", err)
	}
	nodeUID := node.Metadata.UID
	if nodeUID == "" {
		return nil, deny("node %q has no UID", nodeName)
	}
	if u, ok := st.User.Extra["authentication.kubernetes.io/node-uid"]; ok && (len(u) != 1 || u[0] != nodeUID) {
		return nil, deny("the token is bound to another node UID than node %q has", nodeName)
	}
	id, err := AgentID(a.td, d.Cluster, nodeUID)
	if err != nil {
		return nil, deny("agent ID: %v", err)
	}
	values := []string{
		"cluster:" + d.Cluster,
		"agent_ns:" + ns,
		"agent_sa:" + sa,
		"agent_pod_name:" + podName,
		"agent_pod_uid:" + podUID,
		"agent_node_ip:" + pod.Status.HostIP,
		"agent_node_name:" + nodeName,
		"agent_node_uid:" + nodeUID,
	}
	for k, v := range node.Metadata.Labels {
		if c.nodeKeys[k] {
			values = append(values, "agent_node_label:"+k+":"+v)
		}
	}
	for k, v := range pod.Metadata.Labels {
		if c.podKeys[k] {
			values = append(values, "agent_pod_label:"+k+":"+v)
		}
	}
	sort.Strings(values[8:])
	sel := make([]*types.Selector, len(values))
	for i, v := range values {
		sel[i] = &types.Selector{Type: PluginName, Value: v}
	}
	return &nodeattestor.Result{AgentID: id, Selectors: sel, CanReattest: true}, nil
}

// serviceAccount splits "system:serviceaccount:<ns>:<name>".
func serviceAccount(username string) (ns, name string, err error) {
	parts := strings.Split(username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return "", "", fmt.Errorf("user %q is not a service account", username)
	}
	return parts[2], parts[3], nil
}

func extra(st *TokenReviewStatus, key string) (string, error) {
	v := st.User.Extra[key]
	if len(v) != 1 || v[0] == "" {
		return "", fmt.Errorf("the token is not bound to a pod (%s: %q)", key, v)
	}
	return v[0], nil
}
