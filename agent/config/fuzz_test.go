package config

import (
	"os"
	"testing"
)

// FuzzParse feeds arbitrary file text to Parse: it must return a config or
// an error, never panic, and an accepted config must satisfy the rules.
func FuzzParse(f *testing.F) {
	quickstart, err := os.ReadFile("testdata/agent.conf")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(quickstart))
	f.Add(withAgent(base + `    insecure_bootstrap = true
    experimental { sync_interval = "1s" }`))
	f.Add(`{"agent": {"data_dir": "d", "server_address": "s", "trust_domain": "example.org", "insecure_bootstrap": true}}`)
	f.Add(withAgent(base + `    insecure_bootstrap = true
    sds {
        default_svid_name = ""
        default_bundle_name = "ALL"
        disable_spiffe_cert_validation = true
    }`))
	f.Add("agent { server_port = \"99999\" }")
	f.Add("agent { trust_bundle_url = \"http://[::1\" }")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse("fuzz.conf", []byte(text), false)
		if err != nil {
			return
		}
		a := c.Agent
		if a.TrustDomain.IsZero() || a.DataDir == "" || a.ServerAddress == "" || a.ServerPort < 1 || a.ServerPort > 65535 {
			t.Fatalf("accepted an invalid agent block: %+v", a)
		}
		if a.TrustBundlePath == "" && a.TrustBundleURL == "" && !a.InsecureBootstrap {
			t.Fatalf("accepted without bootstrap trust: %+v", a)
		}
		if s := a.SDS; s.DefaultSVIDName == "" || s.DefaultBundleName == "" || s.DefaultAllBundlesName == "" {
			t.Fatalf("accepted an empty SDS name: %+v", s)
		}
		for _, p := range c.Plugins {
			var anything map[string]any
			_ = p.DecodeData(&anything)
			_, _ = p.DataText()
		}
	})
}
