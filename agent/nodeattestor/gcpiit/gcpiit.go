// Package gcpiit collects the evidence of the gcp_iit node attestor: a
// full-format instance identity token for the audience
// "spire-gcp-node-attestor", fetched from the Compute Engine metadata
// server. The payload is the token itself, as in SPIRE.
package gcpiit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

// Type is the attestation type and plugin name.
const Type = "gcp_iit"

// Audience is the audience the server requires.
const Audience = "spire-gcp-node-attestor"

// Defaults match SPIRE's agent plugin.
const (
	DefaultIdentityTokenHost = "metadata.google.internal"
	DefaultServiceAccount    = "default"
)

const maxResponse = 64 << 10

// PluginData is the plugin_data block of agent NodeAttestor "gcp_iit".
type PluginData struct {
	IdentityTokenHost string `hcl:"identity_token_host"`
	ServiceAccount    string `hcl:"service_account"`
}

// Attestor fetches identity tokens.
type Attestor struct {
	url    string
	client *http.Client
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor for d.
func New(d PluginData) (*Attestor, error) {
	host, sa := d.IdentityTokenHost, d.ServiceAccount
	if host == "" {
		host = DefaultIdentityTokenHost
	}
	if sa == "" {
		sa = DefaultServiceAccount
	}
	if strings.ContainsAny(host, "/?#@") {
		return nil, fmt.Errorf("gcpiit: identity_token_host %q must be a host[:port]", host)
	}
	u := url.URL{
		Scheme:   "http",
		Host:     host,
		Path:     "/computeMetadata/v1/instance/service-accounts/" + url.PathEscape(sa) + "/identity",
		RawQuery: url.Values{"audience": {Audience}, "format": {"full"}}.Encode(),
	}
	return &Attestor{url: u.String(), client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// Type returns "gcp_iit".
func (*Attestor) Type() string { return Type }

// AttestationData fetches the identity token.
func (a *Attestor) AttestationData(ctx context.Context, _ []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: %w", err)
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: fetch identity token: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("gcpiit: fetch identity token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gcpiit: fetch identity token: %s: %s", resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, errors.New("gcpiit: empty identity token")
	}
	return []byte(tok), nil
}

// Respond fails: gcp_iit has no challenge.
func (*Attestor) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("gcpiit: unexpected challenge from server")
}
