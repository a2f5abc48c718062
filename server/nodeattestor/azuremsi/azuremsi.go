// Package azuremsi verifies azure_msi node attestation: an access token
// that Azure AD issued to the VM's managed identity. The token's RS256
// signature is checked against the keys Azure AD publishes (found by OIDC
// discovery and cached), then its issuer, audience (the tenant's
// resource_id), lifetime and tenant. Unlike SPIRE the issuer is checked
// too, so a token of another Azure AD authority signed with a shared key
// is not enough. Azure Resource Manager then supplies the VM's
// subscription, name, network security group and virtual network as
// selectors.
//
// Any process on the VM can ask IMDS for such a token, so a principal is
// attested once: a second attestation is refused until the agent is
// evicted.
package azuremsi

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
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
const PluginName = "azure_msi"

// Defaults; each is configurable so a simulator can stand in for Azure.
const (
	DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"
	DefaultResourceID        = "https://management.azure.com/"
	DefaultDiscoveryURL      = "https://login.microsoftonline.com/common/.well-known/openid-configuration"
	DefaultLoginEndpoint     = "https://login.microsoftonline.com"
	DefaultARMEndpoint       = "https://management.azure.com"
	// DefaultLeeway is the clock skew allowed on exp and nbf (SPIRE's).
	DefaultLeeway = 5 * time.Minute
	// DefaultKeyRefresh is how long fetched keys are used before the
	// discovery document is read again.
	DefaultKeyRefresh = time.Hour
)

// MaxPayloadSize bounds the attestation payload; MSI tokens are 1-3 KiB.
const MaxPayloadSize = 64 << 10

// allowedAlgs are the asymmetric algorithms a token may use: never none,
// never HMAC (whose "key" would be the public key).
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512,
}

// TenantConfig is one entry of tenants in plugin_data.
type TenantConfig struct {
	// ResourceID is the required audience (default DefaultResourceID).
	ResourceID string `hcl:"resource_id"`
	// SubscriptionID, AppID and AppSecret let the attestor read the VM
	// from ARM for selectors.
	SubscriptionID string `hcl:"subscription_id"`
	AppID          string `hcl:"app_id"`
	AppSecret      string `hcl:"app_secret"`
	// Issuer is the required iss (default https://sts.windows.net/<tenant>/).
	Issuer string `hcl:"issuer"`
}

// PluginData is the plugin_data block of server NodeAttestor "azure_msi".
// tenants and agent_path_template are SPIRE's keys; the endpoints are
// ours.
type PluginData struct {
	Tenants           map[string]*TenantConfig `hcl:"tenants"`
	AgentPathTemplate string                   `hcl:"agent_path_template"`
	OIDCDiscoveryURL  string                   `hcl:"oidc_discovery_url"`
	LoginEndpoint     string                   `hcl:"login_endpoint"`
	ARMEndpoint       string                   `hcl:"arm_endpoint"`
}

// NodeLookup is the part of the datastore the first-use rule needs.
type NodeLookup = nodeattestor.NodeLookup

// Config configures an Attestor.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// Tenants allowed to attest, by tenant ID.
	Tenants           map[string]TenantConfig
	AgentPathTemplate string
	DiscoveryURL      string
	LoginEndpoint     string
	ARMEndpoint       string
	Leeway            time.Duration
	KeyRefresh        time.Duration
	Nodes             NodeLookup
	HTTPClient        *http.Client
	Now               func() time.Time
}

type tenant struct {
	resourceID, issuer string
	arm                *armClient
}

// Attestor verifies azure_msi attestation.
type Attestor struct {
	cfg     Config
	tmpl    *template.Template
	keys    *keySet
	tenants map[string]*tenant
}

var _ nodeattestor.Attestor = (*Attestor)(nil)

// New returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("azuremsi: trust domain is required")
	}
	if cfg.Nodes == nil {
		return nil, errors.New("azuremsi: a node lookup is required for the first-use rule")
	}
	if len(cfg.Tenants) == 0 {
		return nil, errors.New("azuremsi: at least one tenant is required")
	}
	if cfg.AgentPathTemplate == "" {
		cfg.AgentPathTemplate = DefaultAgentPathTemplate
	}
	// The shared parser, so that SPIRE's template functions work here too.
	tmpl, err := agentpath.Parse("azuremsi", cfg.AgentPathTemplate)
	if err != nil {
		return nil, err
	}
	for p, d := range map[*string]string{&cfg.DiscoveryURL: DefaultDiscoveryURL, &cfg.LoginEndpoint: DefaultLoginEndpoint, &cfg.ARMEndpoint: DefaultARMEndpoint} {
		if *p == "" {
			*p = d
		}
		*p = strings.TrimSuffix(*p, "/")
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.KeyRefresh <= 0 {
		cfg.KeyRefresh = DefaultKeyRefresh
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Attestor{cfg: cfg, tmpl: tmpl, tenants: map[string]*tenant{},
		keys: &keySet{discoveryURL: cfg.DiscoveryURL, client: cfg.HTTPClient, interval: cfg.KeyRefresh, minInterval: 30 * time.Second, now: cfg.Now}}
	for id, tc := range cfg.Tenants {
		t := &tenant{resourceID: tc.ResourceID, issuer: tc.Issuer}
		if t.resourceID == "" {
			t.resourceID = DefaultResourceID
		}
		if t.issuer == "" {
			t.issuer = "https://sts.windows.net/" + id + "/"
		}
		switch {
		case tc.SubscriptionID != "" && tc.AppID != "" && tc.AppSecret != "":
			t.arm = &armClient{login: cfg.LoginEndpoint, arm: cfg.ARMEndpoint, tenant: id, sub: tc.SubscriptionID,
				appID: tc.AppID, appSecret: tc.AppSecret, client: cfg.HTTPClient, now: cfg.Now}
		case tc.SubscriptionID != "" || tc.AppID != "" || tc.AppSecret != "":
			return nil, fmt.Errorf("azuremsi: tenant %q: subscription_id, app_id and app_secret go together", id)
		}
		a.tenants[id] = t
	}
	return a, nil
}

// NewFromPluginData builds an Attestor from its plugin_data.
func NewFromPluginData(td spiffeid.TrustDomain, d PluginData, nodes NodeLookup) (*Attestor, error) {
	tenants := map[string]TenantConfig{}
	for id, t := range d.Tenants {
		if t == nil {
			t = &TenantConfig{}
		}
		tenants[id] = *t
	}
	return New(Config{TrustDomain: td, Tenants: tenants, AgentPathTemplate: d.AgentPathTemplate,
		DiscoveryURL: d.OIDCDiscoveryURL, LoginEndpoint: d.LoginEndpoint, ARMEndpoint: d.ARMEndpoint, Nodes: nodes})
}

// Type implements nodeattestor.Attestor.
func (a *Attestor) Type() string { return PluginName }

// Claims are the token claims the attestor uses.
type Claims struct {
	jwt.Claims
	TenantID string `json:"tid"`
	// ResourceID is the managed identity's resource (the VM, for a
	// system-assigned identity).
	ResourceID string `json:"xms_mirid"`
}

func deny(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, "azuremsi: "+format, args...)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "azuremsi: "+format, args...)
}

// parsePayload extracts the token from the agent's payload.
func parsePayload(b []byte) (*jwt.JSONWebToken, error) {
	if len(b) > MaxPayloadSize {
		return nil, invalid("payload of %d bytes exceeds %d", len(b), MaxPayloadSize)
	}
	var p struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, invalid("malformed payload: %v", err)
	}
	if p.Token == "" {
		return nil, invalid("payload has no token")
	}
	tok, err := jwt.ParseSigned(p.Token, allowedAlgs)
	if err != nil {
		return nil, invalid("malformed token: %v", err)
	}
	if len(tok.Headers) != 1 {
		return nil, invalid("token must have one signature")
	}
	return tok, nil
}

// Verify checks the token in an attestation payload and returns its
// claims and tenant.
func (a *Attestor) Verify(ctx context.Context, b []byte) (*Claims, error) {
	tok, err := parsePayload(b)
	if err != nil {
		return nil, err
	}
	kid := tok.Headers[0].KeyID
	if kid == "" {
		return nil, invalid("token has no key ID")
	}
	key, err := a.keys.key(ctx, kid)
	if errors.Is(err, errKeyNotFound) {
		return nil, deny("key ID %q is not in the key set", kid)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "azuremsi: signing keys: %v", err)
	}
	var c Claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return nil, deny("token signature: %v", err)
	}
	t, ok := a.tenants[c.TenantID]
	if !ok {
		return nil, deny("tenant %q is not authorized", c.TenantID)
	}
	if c.Expiry == nil {
		return nil, deny("token has no exp")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: t.issuer, AnyAudience: []string{t.resourceID}, Time: a.cfg.Now()}, a.cfg.Leeway); err != nil {
		return nil, deny("token claims: %v", err)
	}
	if c.Subject == "" {
		return nil, deny("token has no subject (principal ID)")
	}
	return &c, nil
}

// Attest implements nodeattestor.Attestor.
func (a *Attestor) Attest(ctx context.Context, b []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	c, err := a.Verify(ctx, b)
	if err != nil {
		return nil, err
	}
	id, err := a.agentID(c)
	if err != nil {
		return nil, err
	}
	if err := nodeattestor.CheckFirstUse(ctx, a.cfg.Nodes, id, "azuremsi", "MSI token"); err != nil {
		return nil, err
	}
	values, err := a.resolve(ctx, a.tenants[c.TenantID], c)
	if err != nil {
		return nil, err
	}
	slices.Sort(values)
	values = slices.Compact(values)
	sels := make([]*types.Selector, len(values))
	for i, v := range values {
		sels[i] = &types.Selector{Type: PluginName, Value: v}
	}
	return &nodeattestor.Result{AgentID: id, Selectors: sels}, nil
}

// resolve produces SPIRE's Azure node-resolver selectors. Without ARM
// credentials it derives what it can from the token's signed xms_mirid.
func (a *Attestor) resolve(ctx context.Context, t *tenant, c *Claims) ([]string, error) {
	if t.arm == nil {
		sub, rg, name, ok := vmFromResourceID(c.ResourceID)
		if !ok {
			return nil, nil
		}
		return []string{"subscription-id:" + sub, "vm-name:" + rg + ":" + name}, nil
	}
	vm, err := t.arm.vmByPrincipal(ctx, c.Subject)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "azuremsi: %v", err)
	}
	rg, names, err := resourceID(vm.ID)
	if err != nil || len(names) != 1 {
		return nil, status.Errorf(codes.Internal, "azuremsi: virtual machine ID %q is malformed", vm.ID)
	}
	values := []string{"subscription-id:" + t.arm.sub, "vm-name:" + rg + ":" + names[0]}
	if vm.Properties.NetworkProfile == nil {
		return values, nil
	}
	for _, ref := range vm.Properties.NetworkProfile.NetworkInterfaces {
		nic, err := t.arm.nic(ctx, ref.ID)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "azuremsi: %v", err)
		}
		if nsg := nic.Properties.NetworkSecurityGroup; nsg != nil {
			if g, n, err := resourceID(nsg.ID); err == nil && len(n) == 1 {
				values = append(values, "network-security-group:"+g+":"+n[0])
			}
		}
		for _, ipc := range nic.Properties.IPConfigurations {
			if s := ipc.Properties.Subnet; s != nil {
				if g, n, err := resourceID(s.ID); err == nil && len(n) == 2 {
					values = append(values, "virtual-network:"+g+":"+n[0], "virtual-network-subnet:"+g+":"+n[0]+":"+n[1])
				}
			}
		}
	}
	return values, nil
}

// vmFromResourceID parses /subscriptions/S/resourceGroups/G/providers/
// Microsoft.Compute/virtualMachines/N.
func vmFromResourceID(id string) (sub, rg, name string, ok bool) {
	p := strings.Split(strings.Trim(id, "/"), "/")
	if len(p) != 8 || !strings.EqualFold(p[0], "subscriptions") || !strings.EqualFold(p[2], "resourceGroups") ||
		!strings.EqualFold(p[4], "providers") || !strings.EqualFold(p[5], "Microsoft.Compute") || !strings.EqualFold(p[6], "virtualMachines") {
		return "", "", "", false
	}
	return p[1], p[3], p[7], p[1] != "" && p[3] != "" && p[7] != ""
}

func (a *Attestor) agentID(c *Claims) (spiffeid.ID, error) {
	var buf bytes.Buffer
	err := a.tmpl.Execute(&buf, map[string]any{
		"PluginName": PluginName, "TrustDomain": a.cfg.TrustDomain.Name(),
		"TenantID": c.TenantID, "PrincipalID": c.Subject,
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
