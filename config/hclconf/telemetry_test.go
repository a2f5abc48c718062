package hclconf

import (
	"strings"
	"testing"
)

func TestTelemetry(t *testing.T) {
	root, d := parseRoot(t, "")
	if tm := ParseTelemetry(root); tm.Prometheus != nil || d.HasErrors() {
		t.Errorf("no block: %+v %v", tm, d.Err())
	}

	// SPIRE's documented shape: Prometheus served, other sinks warned of.
	root, d = parseRoot(t, `telemetry {
  Prometheus {
    port = 9988
  }
  DogStatsd = [
    { address = "localhost:8125" },
  ]
  AllowedLabels = []
}`)
	tm := ParseTelemetry(root)
	root.Finish()
	if d.HasErrors() {
		t.Fatal(d.Err())
	}
	if tm.Prometheus == nil || *tm.Prometheus != (Prometheus{Host: "localhost", Port: 9988}) {
		t.Errorf("Prometheus = %+v, want localhost:9988", tm.Prometheus)
	}
	w := strings.Join(d.Warnings(), "\n")
	for _, k := range []string{"telemetry.DogStatsd: not implemented", "telemetry.AllowedLabels: not implemented"} {
		if !strings.Contains(w, k) {
			t.Errorf("warnings %q lack %q", w, k)
		}
	}

	root, d = parseRoot(t, "telemetry {\n  Prometheus {\n    host = \"0.0.0.0\"\n    prot = 1\n  }\n  Bogus = 1\n}")
	ParseTelemetry(root)
	wantErrs(t, d.Err(),
		`test.conf:2: telemetry.Prometheus.port: missing`,
		`test.conf:4: telemetry.Prometheus.prot: unknown key (did you mean "port"?)`,
		`test.conf:6: telemetry.Bogus: unknown key`)
}
