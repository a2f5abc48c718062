// Package awsiid collects the evidence of the aws_iid node attestor: the
// EC2 instance identity document and its RSA-2048 PKCS#7 signature, read
// from the instance metadata service (IMDSv2 session first, IMDSv1 only if
// the service refuses sessions). The server checks the signature against
// the region's AWS certificate, so the agent holds no secret of its own.
package awsiid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

// Type is the attestation type and plugin name.
const Type = "aws_iid"

// DefaultMetadataEndpoint is the IMDS base URL on EC2.
const DefaultMetadataEndpoint = "http://169.254.169.254/latest"

// maxResponse bounds what is read from IMDS; documents are about 500 bytes.
const maxResponse = 64 << 10

// PluginData is the plugin_data block of agent NodeAttestor "aws_iid".
type PluginData struct {
	EC2MetadataEndpoint string `hcl:"ec2_metadata_endpoint"`
}

// AttestationData is the payload, in SPIRE's JSON shape. Signature (the
// legacy RSA-1024 signature) is never sent: the server requires RSA-2048.
type AttestationData struct {
	Document         string `json:"document"`
	Signature        string `json:"signature"`
	SignatureRSA2048 string `json:"rsa2048"`
}

// Attestor reads the identity document from IMDS.
type Attestor struct {
	endpoint string
	client   *http.Client
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor for d.
func New(d PluginData) (*Attestor, error) {
	ep := strings.TrimSuffix(d.EC2MetadataEndpoint, "/")
	if ep == "" {
		ep = DefaultMetadataEndpoint
	}
	if !strings.HasPrefix(ep, "http://") && !strings.HasPrefix(ep, "https://") {
		return nil, fmt.Errorf("awsiid: ec2_metadata_endpoint %q is not an http(s) URL", d.EC2MetadataEndpoint)
	}
	return &Attestor{endpoint: ep, client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// Type returns "aws_iid".
func (*Attestor) Type() string { return Type }

// AttestationData fetches the document and its signature.
func (a *Attestor) AttestationData(ctx context.Context, _ []byte) ([]byte, error) {
	token, err := a.sessionToken(ctx)
	if err != nil {
		return nil, err
	}
	doc, err := a.get(ctx, "/dynamic/instance-identity/document", token)
	if err != nil {
		return nil, err
	}
	sig, err := a.get(ctx, "/dynamic/instance-identity/rsa2048", token)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(AttestationData{Document: doc, SignatureRSA2048: strings.TrimSpace(sig)})
	if err != nil {
		return nil, fmt.Errorf("awsiid: encode: %w", err)
	}
	return b, nil
}

// Respond fails: aws_iid has no challenge.
func (*Attestor) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("awsiid: unexpected challenge from server")
}

// sessionToken asks for an IMDSv2 token. A service that answers the PUT
// with an HTTP error does not offer sessions (IMDSv1 only), so the
// attestor goes on without one; a network error is fatal.
func (a *Attestor) sessionToken(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, a.endpoint+"/api/token", nil)
	if err != nil {
		return "", fmt.Errorf("awsiid: %w", err)
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
	resp, err := a.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("awsiid: IMDSv2 token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return "", fmt.Errorf("awsiid: IMDSv2 token: %w", err)
	}
	return string(b), nil
}

func (a *Attestor) get(ctx context.Context, path, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.endpoint+path, nil)
	if err != nil {
		return "", fmt.Errorf("awsiid: %w", err)
	}
	if token != "" {
		req.Header.Set("X-aws-ec2-metadata-token", token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("awsiid: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return "", fmt.Errorf("awsiid: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("awsiid: GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	if len(b) > maxResponse {
		return "", fmt.Errorf("awsiid: GET %s: response larger than %d bytes", path, maxResponse)
	}
	return string(b), nil
}
