package config

import (
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
		for _, p := range c.Plugins {
			var anything map[string]any
			_ = p.DecodeData(&anything)
			_, _ = p.DataText()
		}
	})
}
