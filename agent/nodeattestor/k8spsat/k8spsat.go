// Package k8spsat attests an agent running in a Kubernetes pod with the
// projected service account token (PSAT) the kubelet mounts into it,
// compatible with SPIRE's "k8s_psat" agent plugin. The token is read
// again for every attestation, since the kubelet rotates it.
package k8spsat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

// Type is the attestation type.
const Type = "k8s_psat"

// DefaultTokenPath is where SPIRE's examples mount the token.
const DefaultTokenPath = "/var/run/secrets/tokens/spire-agent"

// PluginData is the plugin_data block of NodeAttestor "k8s_psat".
type PluginData struct {
	// Cluster names the cluster as the server's config keys it.
	Cluster   string `hcl:"cluster"`
	TokenPath string `hcl:"token_path"`
}

// Attestor sends the pod's PSAT.
type Attestor struct {
	cluster   string
	tokenPath string
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(d PluginData) (*Attestor, error) {
	if d.Cluster == "" {
		return nil, errors.New("k8spsat: cluster is required")
	}
	if d.TokenPath == "" {
		d.TokenPath = DefaultTokenPath
	}
	return &Attestor{cluster: d.Cluster, tokenPath: d.TokenPath}, nil
}

// Type returns "k8s_psat".
func (*Attestor) Type() string { return Type }

// AttestationData is {"cluster": ..., "token": ...}, SPIRE's format.
func (a *Attestor) AttestationData(context.Context, []byte) ([]byte, error) {
	b, err := os.ReadFile(a.tokenPath)
	if err != nil {
		return nil, fmt.Errorf("k8spsat: read token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("k8spsat: token file %s is empty", a.tokenPath)
	}
	out, err := json.Marshal(struct {
		Cluster string `json:"cluster"`
		Token   string `json:"token"`
	}{a.cluster, tok})
	if err != nil {
		return nil, fmt.Errorf("k8spsat: encode: %w", err)
	}
	return out, nil
}

// Respond always fails: the server verifies the token without a challenge.
func (*Attestor) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("k8spsat: unexpected challenge from server")
}
