// Package azuremsi collects the evidence of the azure_msi node attestor: a
// managed-identity access token for the configured resource, fetched from
// the Azure instance metadata service. The server verifies it against
// Azure AD's published keys.
package azuremsi

import (
	"context"
	"encoding/json"
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
const Type = "azure_msi"

// Defaults match SPIRE's agent plugin and Azure's link-local IMDS.
const (
	DefaultResourceID   = "https://management.azure.com/"
	DefaultIMDSEndpoint = "http://169.254.169.254"
)

const maxResponse = 64 << 10

// PluginData is the plugin_data block of agent NodeAttestor "azure_msi".
type PluginData struct {
	// ResourceID is the audience of the token; the server accepts only
	// the one configured for the tenant.
	ResourceID   string `hcl:"resource_id"`
	IMDSEndpoint string `hcl:"imds_endpoint"`
}

// AttestationData is the payload, in SPIRE's JSON shape.
type AttestationData struct {
	Token string `json:"token"`
}

// Attestor fetches MSI tokens.
type Attestor struct {
	resource string
	endpoint string
	client   *http.Client
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor for d.
func New(d PluginData) (*Attestor, error) {
	a := &Attestor{resource: d.ResourceID, endpoint: strings.TrimSuffix(d.IMDSEndpoint, "/"), client: &http.Client{Timeout: 10 * time.Second}}
	if a.resource == "" {
		a.resource = DefaultResourceID
	}
	if a.endpoint == "" {
		a.endpoint = DefaultIMDSEndpoint
	}
	if u, err := url.Parse(a.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("azuremsi: imds_endpoint %q is not an http(s) URL", d.IMDSEndpoint)
	}
	return a, nil
}

// Type returns "azure_msi".
func (*Attestor) Type() string { return Type }

// AttestationData fetches a token from IMDS.
func (a *Attestor) AttestationData(ctx context.Context, _ []byte) ([]byte, error) {
	q := url.Values{"api-version": {"2018-02-01"}, "resource": {a.resource}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.endpoint+"/metadata/identity/oauth2/token?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: %w", err)
	}
	req.Header.Set("Metadata", "true")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: fetch token: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("azuremsi: fetch token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("azuremsi: fetch token: %s: %s", resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("azuremsi: decode token response: %w", err)
	}
	if body.AccessToken == "" {
		return nil, errors.New("azuremsi: token response has no access_token")
	}
	out, err := json.Marshal(AttestationData{Token: body.AccessToken})
	if err != nil {
		return nil, fmt.Errorf("azuremsi: encode: %w", err)
	}
	return out, nil
}

// Respond fails: azure_msi has no challenge.
func (*Attestor) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("azuremsi: unexpected challenge from server")
}
