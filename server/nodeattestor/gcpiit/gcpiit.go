// Package gcpiit verifies gcp_iit node attestation: a Compute Engine
// instance identity token (full format, audience
// "spire-gcp-node-attestor"). Only RS256 is accepted; the key comes from
// Google's certs document, cached for as long as its Expires header
// allows. Unlike SPIRE, iss and exp must be present. The project must be
// on the allow-list. With use_instance_metadata the Compute API adds the
// instance's tags, service accounts, and allowed labels and metadata as
// selectors.
//
// Any process on the instance can ask the metadata server for such a
// token, so an instance is attested once: a second attestation is refused
// until the agent is evicted.
package gcpiit

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/agentpath"
)

// PluginName is the attestation type, the plugin name and the selector
// type.
const PluginName = "gcp_iit"

// Defaults; the URLs are configurable so a simulator can stand in for
// Google.
const (
	Audience                    = "spire-gcp-node-attestor"
	DefaultAgentPathTemplate    = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"
	DefaultCertsURL             = "https://www.googleapis.com/oauth2/v1/certs"
	DefaultComputeEndpoint      = "https://compute.googleapis.com/compute/v1/"
	DefaultIssuer               = "https://accounts.google.com"
	DefaultMaxMetadataValueSize = 128
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = time.Minute
)

// MaxPayloadSize bounds the attestation payload; tokens are about 1 KiB.
const MaxPayloadSize = 64 << 10

// PluginData is the plugin_data block of server NodeAttestor "gcp_iit".
// certs_url, compute_endpoint and issuer are ours; the rest are SPIRE's.
type PluginData struct {
	ProjectIDAllowList   []string `hcl:"projectid_allow_list"`
	AgentPathTemplate    string   `hcl:"agent_path_template"`
	UseInstanceMetadata  bool     `hcl:"use_instance_metadata"`
	AllowedLabelKeys     []string `hcl:"allowed_label_keys"`
	AllowedMetadataKeys  []string `hcl:"allowed_metadata_keys"`
	MaxMetadataValueSize int      `hcl:"max_metadata_value_size"`
	ServiceAccountFile   string   `hcl:"service_account_file"`
	CertsURL             string   `hcl:"certs_url"`
	ComputeEndpoint      string   `hcl:"compute_endpoint"`
	Issuer               string   `hcl:"issuer"`
}

// NodeLookup is the part of the datastore the first-use rule needs.
type NodeLookup = nodeattestor.NodeLookup

// Config configures an Attestor.
type Config struct {
	TrustDomain          spiffeid.TrustDomain
	ProjectIDAllowList   []string
	AgentPathTemplate    string
	UseInstanceMetadata  bool
	AllowedLabelKeys     []string
	AllowedMetadataKeys  []string
	MaxMetadataValueSize int
	// ServiceAccountFile authenticates Compute API calls; required with
	// UseInstanceMetadata.
	ServiceAccountFile string
	CertsURL           string
	ComputeEndpoint    string
	Issuer             string
	Nodes              NodeLookup
	HTTPClient         *http.Client
	Now                func() time.Time
}

// Attestor verifies gcp_iit attestation.
type Attestor struct {
	cfg   Config
	tmpl  *template.Template
	certs *certSet
	sa    *serviceAccount
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("gcpiit: trust domain is required")
	}
	if cfg.Nodes == nil {
		return nil, errors.New("gcpiit: a node lookup is required for the first-use rule")
	}
	if len(cfg.ProjectIDAllowList) == 0 {
		return nil, errors.New("gcpiit: projectid_allow_list is required")
	}
	if cfg.AgentPathTemplate == "" {
		cfg.AgentPathTemplate = DefaultAgentPathTemplate
	}
	// The shared parser, so that SPIRE's template functions work here too.
	tmpl, err := agentpath.Parse("gcpiit", cfg.AgentPathTemplate)
	if err != nil {
		return nil, err
	}
	if cfg.CertsURL == "" {
		cfg.CertsURL = DefaultCertsURL
	}
	if cfg.ComputeEndpoint == "" {
		cfg.ComputeEndpoint = DefaultComputeEndpoint
	}
	if !strings.HasSuffix(cfg.ComputeEndpoint, "/") {
		cfg.ComputeEndpoint += "/"
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if cfg.MaxMetadataValueSize <= 0 {
		cfg.MaxMetadataValueSize = DefaultMaxMetadataValueSize
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Attestor{cfg: cfg, tmpl: tmpl, certs: &certSet{url: cfg.CertsURL, client: cfg.HTTPClient, now: cfg.Now}}
	if cfg.UseInstanceMetadata {
		if cfg.ServiceAccountFile == "" {
			return nil, errors.New("gcpiit: use_instance_metadata needs service_account_file")
		}
		if a.sa, err = loadServiceAccount(cfg.ServiceAccountFile); err != nil {
			return nil, err
		}
		a.sa.client, a.sa.now = cfg.HTTPClient, cfg.Now
	}
	return a, nil
}

// NewFromPluginData builds an Attestor from its plugin_data.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData, nodes NodeLookup) (*Attestor, error) {
	return New(Config{
		TrustDomain: td, ProjectIDAllowList: d.ProjectIDAllowList, AgentPathTemplate: d.AgentPathTemplate,
		UseInstanceMetadata: d.UseInstanceMetadata, AllowedLabelKeys: d.AllowedLabelKeys, AllowedMetadataKeys: d.AllowedMetadataKeys,
		MaxMetadataValueSize: d.MaxMetadataValueSize, ServiceAccountFile: d.ServiceAccountFile,
		CertsURL: d.CertsURL, ComputeEndpoint: d.ComputeEndpoint, Issuer: d.Issuer, Nodes: nodes,
	})
}

// Type implements nodeattestor.Attestor.
func (a *Attestor) Type() string { return PluginName }

// ComputeEngine is the google.compute_engine claim of a full-format token.
type ComputeEngine struct {
	ProjectID                 string `json:"project_id"`
	ProjectNumber             int64  `json:"project_number"`
	Zone                      string `json:"zone"`
	InstanceID                string `json:"instance_id"`
	InstanceName              string `json:"instance_name"`
	InstanceCreationTimestamp int64  `json:"instance_creation_timestamp"`
}

// Claims are the token claims the attestor uses.
type Claims struct {
	jwt.Claims
	Email  string `json:"email"`
	Google struct {
		ComputeEngine ComputeEngine `json:"compute_engine"`
	} `json:"google"`
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "gcpiit: "+format, args...)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "gcpiit: "+format, args...)
}

// parsePayload parses the token (the whole payload) and checks that it
// is a single RS256 signature with a key ID.
func parsePayload(b []byte) (*jwt.JSONWebToken, error) {
	if len(b) > MaxPayloadSize {
		return nil, invalid("payload of %d bytes exceeds %d", len(b), MaxPayloadSize)
	}
	if len(b) == 0 {
		return nil, invalid("empty payload")
	}
	tok, err := jwt.ParseSigned(string(b), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, invalid("malformed token: %v", err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return nil, invalid("token must have one signature with a key ID")
	}
	return tok, nil
}

// Verify checks the token of an attestation payload and returns its
// claims.
func (a *Attestor) Verify(ctx context.Context, b []byte) (*Claims, error) {
	tok, err := parsePayload(b)
	if err != nil {
		return nil, err
	}
	kid := tok.Headers[0].KeyID
	key, err := a.certs.key(ctx, kid)
	if errors.Is(err, errKeyNotFound) {
		return nil, deny("key ID %q is not in the certificate set", kid)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "gcpiit: signing keys: %v", err)
	}
	var c Claims
	if err := tok.Claims(key, &c); err != nil {
		return nil, deny("token signature: %v", err)
	}
	switch {
	case c.Issuer == "":
		return nil, deny("token has no iss")
	case c.Expiry == nil:
		return nil, deny("token has no exp")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: a.cfg.Issuer, AnyAudience: []string{Audience}, Time: a.cfg.Now()}, Leeway); err != nil {
		return nil, deny("token claims: %v", err)
	}
	ce := c.Google.ComputeEngine
	if ce.ProjectID == "" || ce.InstanceID == "" || ce.Zone == "" || ce.InstanceName == "" {
		return nil, deny("token has no compute_engine claims (request format=full)")
	}
	if !slices.Contains(a.cfg.ProjectIDAllowList, ce.ProjectID) {
		return nil, deny("project %q is not in the allow list", ce.ProjectID)
	}
	return &c, nil
}

// Attest implements nodeattestor.Attestor.
func (a *Attestor) Attest(ctx context.Context, b []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	c, err := a.Verify(ctx, b)
	if err != nil {
		return nil, err
	}
	ce := c.Google.ComputeEngine
	id, err := a.agentID(ce)
	if err != nil {
		return nil, err
	}
	if err := nodeattestor.CheckFirstUse(ctx, a.cfg.Nodes, id, "gcpiit", "identity token"); err != nil {
		return nil, err
	}
	values := []string{"project-id:" + ce.ProjectID, "zone:" + ce.Zone, "instance-name:" + ce.InstanceName}
	if c.Email != "" {
		values = append(values, "sa:"+c.Email)
	}
	if a.cfg.UseInstanceMetadata {
		more, err := a.instanceSelectors(ctx, ce)
		if err != nil {
			return nil, err
		}
		values = append(values, more...)
	}
	slices.Sort(values)
	values = slices.Compact(values)
	sels := make([]*types.Selector, len(values))
	for i, v := range values {
		sels[i] = &types.Selector{Type: PluginName, Value: v}
	}
	return &nodeattestor.Result{AgentID: id, Selectors: sels}, nil
}

func (a *Attestor) instanceSelectors(ctx context.Context, ce ComputeEngine) ([]string, error) {
	inst, err := a.instance(ctx, ce.ProjectID, ce.Zone, ce.InstanceName)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "gcpiit: %v", err)
	}
	var values []string
	for _, t := range inst.Tags.Items {
		values = append(values, "tag:"+t)
	}
	for _, sa := range inst.ServiceAccounts {
		values = append(values, "sa:"+sa.Email)
	}
	for _, k := range a.cfg.AllowedLabelKeys {
		if v, ok := inst.Labels[k]; ok {
			values = append(values, "label:"+k+":"+v)
		}
	}
	for _, md := range inst.Metadata.Items {
		if !slices.Contains(a.cfg.AllowedMetadataKeys, md.Key) {
			continue
		}
		v := ""
		if md.Value != nil {
			v = *md.Value
		}
		if len(v) > a.cfg.MaxMetadataValueSize {
			return nil, deny("metadata %q is %d bytes, over max_metadata_value_size %d", md.Key, len(v), a.cfg.MaxMetadataValueSize)
		}
		values = append(values, "metadata:"+md.Key+":"+v)
	}
	return values, nil
}

func (a *Attestor) agentID(ce ComputeEngine) (spiffeid.ID, error) {
	var buf bytes.Buffer
	err := a.tmpl.Execute(&buf, map[string]any{
		"PluginName": PluginName, "TrustDomain": a.cfg.TrustDomain.Name(),
		"ProjectID": ce.ProjectID, "ProjectNumber": ce.ProjectNumber, "Zone": ce.Zone,
		"InstanceID": ce.InstanceID, "InstanceName": ce.InstanceName, "InstanceCreationTimestamp": ce.InstanceCreationTimestamp,
	})
	if err != nil {
		return spiffeid.ID{}, deny("agent_path_template: %v", err)
	}
	if !strings.HasPrefix(buf.String(), "/") {
		return spiffeid.ID{}, deny("agent path %q does not start with /", buf.String())
	}
	id, err := spiffeid.FromPath(a.cfg.TrustDomain, "/spire/agent"+buf.String())
	if err != nil {
		return spiffeid.ID{}, deny("agent path %q: %v", buf.String(), err)
	}
	return id, nil
}
