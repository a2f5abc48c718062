package config

import (
	"net/url"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary file text to Parse: it must return a config or
// an error, never panic, and an accepted config must satisfy the rules.
func FuzzParse(f *testing.F) {
	quickstart, err := os.ReadFile("testdata/server.conf")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(quickstart))
	f.Add(withServer(`trust_domain = "example.org"
    data_dir = "d"
    ca_subject { country = ["US"] }
    admin_ids = ["spiffe://example.org/a"]`))
	f.Add(`{"server": {"trust_domain": "example.org", "data_dir": "d"}, "plugins": {"DataStore": [{"sql": {"plugin_data": {"a": {"b": 1}}}}]}}`)
	f.Add("server { ca_ttl = \"7d\" }")
	f.Add("server { x = <<EOF\nabc\nEOF\n}")
	f.Add("server { x = <<-EOF\n  abc\n  EOF\n}")
	f.Add(`plugins { KeyManager { disk { plugin_data { a = "\u00e9" } } } }`)
	f.Add(`server { trust_domain = "\x" }`)
	f.Add("a \"b\" \"c\" { d = [1, {e = 2}] }")
	f.Add(withServer(`trust_domain = "example.org"
    data_dir = "d"
    federation {
        bundle_endpoint { port = 8443 profile "https_web" { serving_cert_file { cert_file_path = "c" key_file_path = "k" } } }
        federates_with "b.test" { bundle_endpoint_url = "https://b" bundle_endpoint_profile "https_spiffe" { endpoint_spiffe_id = "spiffe://b.test/s" } }
    }`))
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse("fuzz.conf", []byte(text), false)
		if err != nil {
			return
		}
		if c.Server.TrustDomain.IsZero() || c.Server.DataDir == "" {
			t.Fatalf("accepted without required values: %+v", c.Server)
		}
		for _, typ := range []string{TypeDataStore, TypeKeyManager} {
			if n := len(c.EnabledPlugins(typ)); n != 1 {
				t.Fatalf("accepted %d enabled %s plugins", n, typ)
			}
		}
		for _, r := range c.Server.Federation.FederatesWith {
			if r.TrustDomain.IsZero() || r.TrustDomain == c.Server.TrustDomain || !isHTTPS(r.BundleEndpointURL) {
				t.Fatalf("accepted federates_with %+v", r)
			}
		}
		if be := c.Server.Federation.BundleEndpoint; be != nil {
			web := be.ACME != nil || be.ServingCertFile != nil
			if (be.Profile == ProfileHTTPSWeb) != web || (be.Profile != ProfileHTTPSWeb && be.Profile != ProfileHTTPSSPIFFE) {
				t.Fatalf("accepted bundle_endpoint %+v", be)
			}
		}
		for _, p := range c.Plugins {
			var anything map[string]any
			_ = p.DecodeData(&anything)
			_, _ = p.DataText()
		}
	})
}

func isHTTPS(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}
