package config

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func parseFed(t *testing.T, fed string) (*Config, error) {
	t.Helper()
	return Parse("server.conf", []byte(withServer("trust_domain = \"example.org\"\ndata_dir = \"d\"\nfederation {\n"+fed+"\n}")), false)
}

// TestFederationSPIREDoc parses the federation example of SPIRE's server
// documentation, with serving_cert_file in place of acme.
func TestFederationSPIREDoc(t *testing.T) {
	c, err := parseFed(t, `
        bundle_endpoint {
            address = "127.0.0.1"
            port = 8443
            refresh_hint = "10m"
            profile "https_web" {
                serving_cert_file {
                    cert_file_path = "/c.pem"
                    key_file_path = "/k.pem"
                    file_sync_interval = "5m"
                }
            }
        }
        federates_with "domain1.test" {
            bundle_endpoint_url = "https://1.2.3.4:8443"
            bundle_endpoint_profile "https_web" {}
        }
        federates_with "domain2.test" {
            bundle_endpoint_url = "https://5.6.7.8:8443"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://domain2.test/beserver"
            }
        }`)
	if err != nil {
		t.Fatal(err)
	}
	be := c.Server.Federation.BundleEndpoint
	if be == nil || be.Address != "127.0.0.1" || be.Port != 8443 || be.RefreshHint != 10*time.Minute || be.Profile != ProfileHTTPSWeb ||
		be.ServingCertFile == nil || *be.ServingCertFile != (ServingCertFile{"/c.pem", "/k.pem", 5 * time.Minute}) || be.ACME != nil {
		t.Fatalf("bundle_endpoint = %+v", be)
	}
	fw := c.Server.Federation.FederatesWith
	want := []FederatesWith{
		{TrustDomain: spiffeid.RequireTrustDomainFromString("domain1.test"), BundleEndpointURL: "https://1.2.3.4:8443"},
		{TrustDomain: spiffeid.RequireTrustDomainFromString("domain2.test"), BundleEndpointURL: "https://5.6.7.8:8443",
			EndpointSPIFFEID: spiffeid.RequireFromString("spiffe://domain2.test/beserver")},
	}
	if len(fw) != 2 || fw[0] != want[0] || fw[1] != want[1] {
		t.Fatalf("federates_with = %+v", fw)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings: %v", c.Warnings)
	}
}

func TestFederationDefaultsAndWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, fed string
		check     func(t *testing.T, c *Config)
		warn      string
	}{
		{"spiffe profile, defaults", `bundle_endpoint { profile "https_spiffe" {} }`, func(t *testing.T, c *Config) {
			be := c.Server.Federation.BundleEndpoint
			if be.Address != "0.0.0.0" || be.Port != 443 || be.RefreshHint != 5*time.Minute || be.Profile != ProfileHTTPSSPIFFE {
				t.Fatalf("%+v", be)
			}
		}, ""},
		{"no profile", `bundle_endpoint { port = 8443 }`, func(t *testing.T, c *Config) {
			if c.Server.Federation.BundleEndpoint.Profile != ProfileHTTPSSPIFFE {
				t.Fatal("no https_spiffe default")
			}
		}, "has no profile set, using https_spiffe as default"},
		{"acme", `bundle_endpoint { profile "https_web" { acme { domain_name = "example.org" email = "m@example.org" tos_accepted = true } } }`,
			func(t *testing.T, c *Config) {
				a := c.Server.Federation.BundleEndpoint.ACME
				if a == nil || *a != (ACME{DomainName: "example.org", Email: "m@example.org", ToSAccepted: true}) {
					t.Fatalf("%+v", a)
				}
			}, ""},
		{"deprecated acme", `bundle_endpoint { acme { domain_name = "example.org" } }`, func(t *testing.T, c *Config) {
			if c.Server.Federation.BundleEndpoint.ACME == nil || c.Server.Federation.BundleEndpoint.Profile != ProfileHTTPSWeb {
				t.Fatal("legacy acme not read")
			}
		}, "ACME configuration within the bundle_endpoint is deprecated"},
		{"file sync default", `bundle_endpoint { profile "https_web" { serving_cert_file { cert_file_path = "c" key_file_path = "k" } } }`,
			func(t *testing.T, c *Config) {
				if f := c.Server.Federation.BundleEndpoint.ServingCertFile; f.FileSyncInterval != time.Hour {
					t.Fatalf("%+v", f)
				}
			}, ""},
		{"high refresh hint", `bundle_endpoint { refresh_hint = "25h" profile "https_spiffe" {} }`, nil, "refresh hint set to a high value"},
		{"low refresh hint", `bundle_endpoint { refresh_hint = "30s" profile "https_spiffe" {} }`, nil, "refresh hint set too low"},
		{"empty block", ``, func(t *testing.T, c *Config) {
			if c.Server.Federation.BundleEndpoint != nil || len(c.Server.Federation.FederatesWith) != 0 {
				t.Fatalf("%+v", c.Server.Federation)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFed(t, tc.fed)
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			all := strings.Join(c.Warnings, "\n")
			if (tc.warn == "") != (all == "") || !strings.Contains(all, tc.warn) {
				t.Fatalf("warnings %q, want %q", all, tc.warn)
			}
		})
	}
}

// TestFederationJSON: SPIRE also reads its configuration as JSON, which
// the HCL parser flattens.
func TestFederationJSON(t *testing.T) {
	c, err := Parse("server.json", []byte(`{"server": {"trust_domain": "example.org", "data_dir": "d", "federation": {
		"bundle_endpoint": {"port": 8443, "profile": {"https_spiffe": {}}},
		"federates_with": {"b.test": {"bundle_endpoint_url": "https://b:8443", "bundle_endpoint_profile": {"https_spiffe": {"endpoint_spiffe_id": "spiffe://b.test/spire/server"}}}}}},
		"plugins": {"DataStore": {"sql": {"plugin_data": {}}}, "KeyManager": {"memory": {"plugin_data": {}}}, "NodeAttestor": {"join_token": {"plugin_data": {}}}}}`), false)
	if err != nil {
		t.Fatal(err)
	}
	if be := c.Server.Federation.BundleEndpoint; be == nil || be.Port != 8443 || be.Profile != ProfileHTTPSSPIFFE {
		t.Fatalf("bundle_endpoint = %+v", be)
	}
	if fw := c.Server.Federation.FederatesWith; len(fw) != 1 || fw[0].EndpointSPIFFEID.String() != "spiffe://b.test/spire/server" {
		t.Fatalf("federates_with = %+v", fw)
	}
}

func TestFederationErrors(t *testing.T) {
	for _, tc := range []struct{ name, fed, want string }{
		{"acme and profile", `bundle_endpoint { acme { domain_name = "x" } profile "https_spiffe" {} }`, "either bundle endpoint 'acme' or 'profile' can be set, but not both"},
		{"empty web profile", `bundle_endpoint { profile "https_web" {} }`, "'acme' or 'serving_cert_file' is required"},
		{"two profiles", `bundle_endpoint { profile "https_web" {} profile "https_spiffe" {} }`, "exactly one bundle endpoint profile is expected"},
		{"unknown profile", `bundle_endpoint { profile "https_other" {} }`, "unknown bundle endpoint profile configured"},
		{"bad address", `bundle_endpoint { address = "localhost" profile "https_spiffe" {} }`, `"localhost" is not an IP address`},
		{"bad port", `bundle_endpoint { port = 70000 profile "https_spiffe" {} }`, "bundle_endpoint.port"},
		{"unknown key", `bundle_endpoint { profile "https_spiffe" {} use_web_pki = true }`, "bundle_endpoint.use_web_pki: unknown key"},
		{"acme without domain", `bundle_endpoint { profile "https_web" { acme { email = "a@b" } } }`, "acme.domain_name: missing"},
		{"cert file without key", `bundle_endpoint { profile "https_web" { serving_cert_file { cert_file_path = "c" } } }`, "key_file_path: missing"},
		{"bad file_sync_interval", `bundle_endpoint { profile "https_web" { serving_cert_file { cert_file_path = "c" key_file_path = "k" file_sync_interval = "soon" } } }`, "file_sync_interval"},
		{"no profile", `federates_with "b.test" { bundle_endpoint_url = "https://b" }`, `federation configuration for trust domain "b.test": missing bundle endpoint configuration`},
		{"no URL", `federates_with "b.test" { bundle_endpoint_profile "https_web" {} }`, "bundle_endpoint_url: missing"},
		{"http URL", `federates_with "b.test" { bundle_endpoint_url = "http://b" bundle_endpoint_profile "https_web" {} }`, "is not an https URL"},
		{"spiffe without ID", `federates_with "b.test" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "https_spiffe" {} }`, "could not get endpoint SPIFFE ID"},
		{"unknown federation profile", `federates_with "b.test" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "x" {} }`, "no bundle endpoint profile defined"},
		{"bad trust domain", `federates_with "B TEST" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "https_web" {} }`, `invalid trust domain "B TEST"`},
		{"own trust domain", `federates_with "example.org" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "https_web" {} }`, "this server's own trust domain"},
		{"twice", `federates_with "b.test" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "https_web" {} }
		           federates_with "b.test" { bundle_endpoint_url = "https://c" bundle_endpoint_profile "https_web" {} }`, "set more than once"},
		{"unknown federation key", `federates_with "b.test" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "https_web" {} refresh = 1 }`, "federates_with.b.test.refresh: unknown key"},
		{"unknown block", `bundle_endpoints {}`, "federation.bundle_endpoints: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFed(t, tc.fed)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}
