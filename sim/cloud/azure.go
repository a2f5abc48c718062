package cloud

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// AzureVM describes the simulated virtual machine and its managed
// identity.
type AzureVM struct {
	TenantID, SubscriptionID, ResourceGroup, Name string
	// PrincipalID is the object ID of the VM's system-assigned identity.
	PrincipalID string
	// NetworkSecurityGroup, VirtualNetwork and Subnet name the network
	// resources of its one network interface, all in ResourceGroup.
	NetworkSecurityGroup, VirtualNetwork, Subnet string
}

// DefaultAzureVM is a plausible VM.
func DefaultAzureVM() AzureVM {
	return AzureVM{
		TenantID: "00000000-1111-2222-3333-444444444444", SubscriptionID: "d5b40d61-272e-48da-beb9-05f295c42bd6",
		ResourceGroup: "frontend", Name: "blog", PrincipalID: "9c1bd0fb-5bd7-4e5b-9d0c-1f3c5b0e0a11",
		NetworkSecurityGroup: "webservers", VirtualNetwork: "vnet", Subnet: "default",
	}
}

// ID is the VM's ARM resource ID.
func (vm AzureVM) ID() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", vm.SubscriptionID, vm.ResourceGroup, vm.Name)
}

func (vm AzureVM) networkID(kind, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/%s/%s", vm.SubscriptionID, vm.ResourceGroup, kind, name)
}

// AzureIssuer is the issuer of MSI tokens for tenant (the v1 endpoint
// that MSI uses).
func AzureIssuer(tenant string) string { return "https://sts.windows.net/" + tenant + "/" }

// AzureConfig configures StartAzure.
type AzureConfig struct {
	// VM defaults to DefaultAzureVM().
	VM *AzureVM
	// AppID and AppSecret are the application credentials the token
	// endpoint accepts (defaults "sim-app" / "sim-secret").
	AppID, AppSecret string
	// TokenLifetime defaults to one hour.
	TokenLifetime time.Duration
}

// Azure is a running Azure simulator.
type Azure struct {
	srv               *server
	vm                AzureVM
	appID, appSecret  string
	lifetime          time.Duration
	bearer            bearerTokens
	discoveryFailing  atomic.Bool
	discoveryRequests atomic.Int64

	mu  sync.Mutex
	key *signingKey
}

// StartAzure starts IMDS (/metadata/...), OIDC discovery and JWKS
// (/common/...), the client-credentials token endpoint
// (/<tenant>/oauth2/v2.0/token) and ARM (/arm/...) on one loopback listener.
func StartAzure(cfg AzureConfig) (*Azure, error) {
	a := &Azure{vm: DefaultAzureVM(), appID: cfg.AppID, appSecret: cfg.AppSecret, lifetime: cfg.TokenLifetime}
	if cfg.VM != nil {
		a.vm = *cfg.VM
	}
	if a.appID == "" {
		a.appID, a.appSecret = "sim-app", "sim-secret"
	}
	if a.lifetime <= 0 {
		a.lifetime = time.Hour
	}
	var err error
	if a.key, err = newSigningKey(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/identity/oauth2/token", a.msiToken)
	mux.HandleFunc("GET /common/.well-known/openid-configuration", a.discovery)
	mux.HandleFunc("GET /common/discovery/keys", a.keys)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", a.clientCredentials)
	mux.HandleFunc("GET /arm/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines", a.listVMs)
	mux.HandleFunc("GET /arm/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{nic}", a.getNIC)
	if a.srv, err = startServer("azure", mux); err != nil {
		return nil, err
	}
	return a, nil
}

// Close stops the simulator.
func (a *Azure) Close() error { return a.srv.close() }

// VM is the simulated VM.
func (a *Azure) VM() AzureVM { return a.vm }

// IMDSEndpoint is the agent's imds_endpoint.
func (a *Azure) IMDSEndpoint() string { return a.srv.url }

// DiscoveryURL is the server's oidc_discovery_url.
func (a *Azure) DiscoveryURL() string { return a.srv.url + "/common/.well-known/openid-configuration" }

// LoginEndpoint is the server's login_endpoint (client credentials).
func (a *Azure) LoginEndpoint() string { return a.srv.url }

// ARMEndpoint is the server's arm_endpoint.
func (a *Azure) ARMEndpoint() string { return a.srv.url + "/arm" }

// AppCredentials are the app ID and secret the token endpoint accepts.
func (a *Azure) AppCredentials() (id, secret string) { return a.appID, a.appSecret }

// KeyID is the key ID of the current signing key.
func (a *Azure) KeyID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.key.kid
}

// RotateKey replaces the signing key; the old one leaves the JWKS.
func (a *Azure) RotateKey() error {
	k, err := newSigningKey()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.key = k
	a.mu.Unlock()
	return nil
}

// SetDiscoveryFailing makes discovery and JWKS answer 503, as during an
// outage.
func (a *Azure) SetDiscoveryFailing(v bool) { a.discoveryFailing.Store(v) }

// DiscoveryRequests counts discovery document fetches.
func (a *Azure) DiscoveryRequests() int64 { return a.discoveryRequests.Load() }

// Claims returns the claims of an MSI token for resource, valid now.
func (a *Azure) Claims(resource string) map[string]any {
	now := time.Now()
	return map[string]any{
		"aud": resource, "iss": AzureIssuer(a.vm.TenantID),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(a.lifetime).Unix(),
		"tid": a.vm.TenantID, "oid": a.vm.PrincipalID, "sub": a.vm.PrincipalID,
		"idtyp": "app", "xms_mirid": a.vm.ID(),
	}
}

// MintToken signs claims with the current key, for tests that need a
// token IMDS would not give out.
func (a *Azure) MintToken(claims map[string]any) (string, error) {
	a.mu.Lock()
	k := a.key
	a.mu.Unlock()
	return k.mint(claims)
}

func (a *Azure) msiToken(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata") != "true" {
		http.Error(w, `{"error":"bad_request","error_description":"Required metadata header not specified"}`, http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	resource := q.Get("resource")
	if q.Get("api-version") == "" || resource == "" {
		http.Error(w, `{"error":"invalid_request","error_description":"api-version and resource are required"}`, http.StatusBadRequest)
		return
	}
	tok, err := a.MintToken(a.Claims(resource))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]string{
		"access_token": tok, "resource": resource, "token_type": "Bearer",
		"expires_on": fmt.Sprint(time.Now().Add(a.lifetime).Unix()),
	})
}

func (a *Azure) discovery(w http.ResponseWriter, _ *http.Request) {
	a.discoveryRequests.Add(1)
	if a.discoveryFailing.Load() {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{
		"issuer":                                "https://sts.windows.net/{tenantid}/",
		"jwks_uri":                              a.srv.url + "/common/discovery/keys",
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (a *Azure) keys(w http.ResponseWriter, _ *http.Request) {
	if a.discoveryFailing.Load() {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	a.mu.Lock()
	k := a.key
	a.mu.Unlock()
	writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.jwk()}})
}

func (a *Azure) clientCredentials(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f := r.PostForm
	if r.PathValue("tenant") != a.vm.TenantID || f.Get("grant_type") != "client_credentials" ||
		f.Get("client_id") != a.appID || subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(a.appSecret)) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		writeJSON(w, map[string]string{"error": "invalid_client"})
		return
	}
	writeJSON(w, map[string]any{"access_token": a.bearer.issue(), "token_type": "Bearer", "expires_in": 3599})
}

func (a *Azure) authorized(w http.ResponseWriter, r *http.Request) bool {
	if !a.bearer.valid(r) {
		w.WriteHeader(http.StatusUnauthorized)
		writeJSON(w, map[string]any{"error": map[string]string{"code": "InvalidAuthenticationToken"}})
		return false
	}
	if r.URL.Query().Get("api-version") == "" {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]any{"error": map[string]string{"code": "MissingApiVersionParameter"}})
		return false
	}
	return true
}

func (a *Azure) listVMs(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	vms := []any{}
	if strings.EqualFold(r.PathValue("sub"), a.vm.SubscriptionID) {
		vms = append(vms, map[string]any{
			"id": a.vm.ID(), "name": a.vm.Name, "type": "Microsoft.Compute/virtualMachines",
			"identity": map[string]string{"type": "SystemAssigned", "principalId": a.vm.PrincipalID, "tenantId": a.vm.TenantID},
			"properties": map[string]any{"networkProfile": map[string]any{
				"networkInterfaces": []any{map[string]any{"id": a.vm.networkID("networkInterfaces", a.vm.Name+"-nic")}},
			}},
		})
	}
	writeJSON(w, map[string]any{"value": vms})
}

func (a *Azure) getNIC(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	if r.PathValue("sub") != a.vm.SubscriptionID || r.PathValue("rg") != a.vm.ResourceGroup || r.PathValue("nic") != a.vm.Name+"-nic" {
		w.WriteHeader(http.StatusNotFound)
		writeJSON(w, map[string]any{"error": map[string]string{"code": "ResourceNotFound"}})
		return
	}
	writeJSON(w, map[string]any{
		"id": a.vm.networkID("networkInterfaces", a.vm.Name+"-nic"),
		"properties": map[string]any{
			"networkSecurityGroup": map[string]string{"id": a.vm.networkID("networkSecurityGroups", a.vm.NetworkSecurityGroup)},
			"ipConfigurations": []any{map[string]any{"properties": map[string]any{
				"subnet": map[string]string{"id": a.vm.networkID("virtualNetworks", a.vm.VirtualNetwork) + "/subnets/" + a.vm.Subnet},
			}}},
		},
	})
}
