package hclconf

import (
	"testing"
	"time"
)

// FuzzPluginData parses arbitrary text as a plugins block and decodes every
// plugin's data into a struct: parsing, key checking, decoding and printing
// must never panic, even where the HCL library itself would.
func FuzzPluginData(f *testing.F) {
	f.Add(`plugins { KeyManager "disk" { plugin_data { keys_path = "x" nested { depth = 1 } } } }`)
	f.Add(`plugins { KeyManager { disk { plugin_data { server { addr = "a" } server { addr = "b" } } } } }`)
	f.Add(`{"plugins": {"KeyManager": [{"disk": {"plugin_data": {"labels": {"a": "b"}}}}]}}`)
	f.Add("plugins { KeyManager \"d\" { plugin_data { keys_path = <<EOF\nx\nEOF\n } } }")
	f.Add(`plugins { KeyManager "d" { plugin_data { tags = [1, true, "x"] rotate_every = "1d" } } }`)
	f.Add(`plugins { KeyManager "d" { enabled = "x" plugin_args = "y" plugin_checksum = 5 } }`)
	f.Fuzz(func(t *testing.T, text string) {
		d := NewDiagnostics("fuzz.conf")
		root := Parse(d, []byte(text), false)
		if root == nil {
			if !d.HasErrors() {
				t.Fatal("Parse failed without an error")
			}
			return
		}
		ParseHealthChecks(root)
		for _, p := range ParsePlugins(root, []PluginRule{{Type: "KeyManager", Max: -1}}) {
			var cfg diskConfig
			if err := p.DecodeData(&cfg); err == nil {
				_, _ = p.ParseDuration("rotate_every", cfg.RotateEvery)
			}
			var anything map[string]any
			_ = p.DecodeData(&anything)
			_, _ = p.DataText()
		}
		var s string
		var dur time.Duration
		root.String("s", &s)
		root.Duration("dur", &dur)
		root.Finish()
		_ = d.Err()
	})
}

// FuzzTelemetry parses arbitrary text as a telemetry block: the lists of
// sink blocks (DogStatsd = [{ ... }], repeated blocks, JSON) must never
// panic, and a result without errors names an address for every sink.
func FuzzTelemetry(f *testing.F) {
	f.Add(`telemetry { Prometheus { port = 9988 } DogStatsd = [{ address = "localhost:8125" }] InMem {} }`)
	f.Add(`telemetry { Statsd = [{ address = "a:1" }, { address = "b:2" }] M3 = [{ address = "m:9000" env = "prod" }] }`)
	f.Add(`telemetry { Statsd { address = "a:1" } Statsd { address = "b:2" } AllowedLabels = ["x"] BlockedPrefixes = "y" }`)
	f.Add(`{"telemetry": {"DogStatsd": [{"address": "h:1"}], "M3": [{"address": "m:1", "env": "e"}], "InMem": {}}}`)
	f.Add(`telemetry { DogStatsd = ["x", 1] M3 = 3 InMem = [] Statsd "label" { address = "a:1" } }`)
	f.Fuzz(func(t *testing.T, text string) {
		d := NewDiagnostics("fuzz.conf")
		root := Parse(d, []byte(text), false)
		if root == nil {
			return
		}
		tm := ParseTelemetry(root)
		root.Finish()
		if d.HasErrors() {
			return
		}
		for _, a := range append(append([]Address(nil), tm.DogStatsd...), tm.Statsd...) {
			if a.Address == "" {
				t.Fatalf("a sink without an address and no error: %+v", tm)
			}
		}
		for _, m := range tm.M3 {
			if m.Address == "" || m.Env == "" {
				t.Fatalf("an M3 sink without address or env and no error: %+v", tm)
			}
		}
	})
}
