package hclconf

import (
	"reflect"
	"testing"
)

func TestTelemetry(t *testing.T) {
	root, d := parseRoot(t, "")
	if tm := ParseTelemetry(root); tm.Configured() || !tm.EnableHostnameLabel || d.HasErrors() {
		t.Errorf("no block: %+v %v", tm, d.Err())
	}

	// SPIRE's documented sample (doc/telemetry/telemetry_config.md).
	root, d = parseRoot(t, `telemetry {
  Prometheus {
    port = 9988
  }
  DogStatsd = [
    { address = "localhost:8125" },
  ]
  Statsd = [
    { address = "localhost:1337" },
    { address = "collector.example.org:8125" },
  ]
  M3 = [
    { address = "localhost:9000" env = "prod" },
  ]
  InMem {}
  MetricPrefix = "edge"
  EnableTrustDomainLabel = true
  EnableHostnameLabel = false
  AllowedLabels = []
  BlockedLabels = ["host"]
  AllowedPrefixes = []
  BlockedPrefixes = ["spire_server.datastore"]
}`)
	tm := ParseTelemetry(root)
	root.Finish()
	if d.HasErrors() || len(d.Warnings()) != 0 {
		t.Fatal(d.Err(), d.Warnings())
	}
	want := Telemetry{
		Prometheus:             &Prometheus{Host: "localhost", Port: 9988},
		DogStatsd:              []Address{{"localhost:8125"}},
		Statsd:                 []Address{{"localhost:1337"}, {"collector.example.org:8125"}},
		M3:                     []M3{{Address: "localhost:9000", Env: "prod"}},
		InMem:                  true,
		MetricPrefix:           "edge",
		EnableTrustDomainLabel: true,
		AllowedLabels:          nil,
		BlockedLabels:          []string{"host"},
		AllowedPrefixes:        nil,
		BlockedPrefixes:        []string{"spire_server.datastore"},
	}
	if !reflect.DeepEqual(tm, want) {
		t.Errorf("got  %+v\nwant %+v", tm, want)
	}

	// Repeated blocks, which SPIRE's decoder also takes.
	root, d = parseRoot(t, "telemetry {\n  Statsd { address = \"a:1\" }\n  Statsd { address = \"b:2\" }\n}")
	if tm := ParseTelemetry(root); d.HasErrors() || !reflect.DeepEqual(tm.Statsd, []Address{{"a:1"}, {"b:2"}}) {
		t.Errorf("repeated blocks: %+v %v", tm.Statsd, d.Err())
	}

	root, d = parseRoot(t, "telemetry {\n  Prometheus {\n    host = \"0.0.0.0\"\n    prot = 1\n  }\n  Bogus = 1\n"+
		"  DogStatsd = [{ adress = \"x:1\" }]\n  Statsd = [{ address = \"nohost\" }]\n  M3 = [{ address = \"m:1\" }]\n  InMem = 1\n}")
	ParseTelemetry(root)
	wantErrs(t, d.Err(),
		`test.conf:2: telemetry.Prometheus.port: missing`,
		`test.conf:4: telemetry.Prometheus.prot: unknown key (did you mean "port"?)`,
		`test.conf:6: telemetry.Bogus: unknown key`,
		`telemetry.DogStatsd.address: missing`,
		`test.conf:7: telemetry.DogStatsd.adress: unknown key (did you mean "address"?)`,
		`telemetry.Statsd.address: "nohost" is not host:port`,
		`telemetry.M3.env: missing`,
		`test.conf:10: telemetry.InMem: must be a block`)
}
