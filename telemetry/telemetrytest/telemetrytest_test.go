package telemetrytest

import (
	"errors"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/telemetry"
)

// TestRecorder: what a component emits is read back under its Prometheus
// name, by type, and a name never emitted reads as absent.
func TestRecorder(t *testing.T) {
	r := New(t, telemetry.AgentService)
	m := r.Metrics
	m.IncrCounter([]string{"a", "b"}, 2)
	m.IncrCounter([]string{"a", "b"}, 0)
	m.SetGauge([]string{"g"}, 7)
	m.AddSample([]string{"s"}, 3)
	m.AddSample([]string{"s"}, 4)
	ok := error(nil)
	m.StartCall("c").Done(&ok)
	bad := errors.New("boom")
	m.StartCall("c").Done(&bad)
	m.StartCall("c").Done(nil)
	m.MeasureSince([]string{"x"}, time.Now())

	if got := r.Counter("spire_agent_a_b"); got != 2 {
		t.Errorf("counter = %v, want 2", got)
	}
	if got := r.Gauge("spire_agent_g"); got != 7 {
		t.Errorf("gauge = %v, want 7", got)
	}
	if n, sum := r.Samples("spire_agent_s"); n != 2 || sum != 7 {
		t.Errorf("samples = %d, %v; want 2, 7", n, sum)
	}
	if got := r.Calls("spire_agent_c", "OK"); got != 2 {
		t.Errorf("OK calls = %d, want 2", got)
	}
	if got := r.Calls("spire_agent_c", "Unknown"); got != 1 {
		t.Errorf("Unknown calls = %d, want 1", got)
	}
	if got := r.Calls("spire_agent_c", "NotFound"); got != -1 {
		t.Errorf("NotFound calls = %d, want -1", got)
	}
	if got := r.Counter("spire_agent_never"); got != -1 {
		t.Errorf("absent counter = %v, want -1", got)
	}
	if n, _ := r.Samples("spire_agent_never"); n != -1 {
		t.Errorf("absent summary = %d, want -1", n)
	}
}
