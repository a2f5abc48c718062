// Package telemetrytest gives tests a real telemetry.Metrics, fed to a real
// Prometheus sink in a private registry, and reads back what a component
// emitted under the names a scrape would show (spire_agent_..., without the
// host label), so that a test asserts the exported metric rather than a
// call to a fake.
package telemetrytest

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Recorder is a Metrics whose emissions can be read back.
type Recorder struct {
	t   testing.TB
	reg *prometheus.Registry
	// Metrics is what the component under test is given.
	Metrics *telemetry.Metrics
}

// New returns a Recorder whose Metrics name metrics as service does
// (telemetry.AgentService or telemetry.ServerService).
func New(t testing.TB, service string) *Recorder {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := telemetry.New(hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}}, telemetry.Options{Service: service, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return &Recorder{t: t, reg: reg, Metrics: m}
}

// Value is one series of a family: its labels and what it holds.
type Value struct {
	Labels map[string]string
	// Value is a counter's or a gauge's value; for a summary, its sum.
	Value float64
	// Count is a summary's number of observations (0 otherwise).
	Count uint64
}

// Family returns the series of the family name (as Prometheus exposes it)
// and its type ("counter", "gauge", "summary"), or nil and "" when nothing
// was emitted under that name.
func (r *Recorder) Family(name string) ([]Value, string) {
	r.t.Helper()
	families, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		var out []Value
		for _, m := range f.GetMetric() {
			v := Value{Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				v.Labels[l.GetName()] = l.GetValue()
			}
			// The type's name, not client_model's constants: that module is
			// only an indirect dependency.
			switch strings.ToLower(f.GetType().String()) {
			case "counter":
				v.Value = m.GetCounter().GetValue()
			case "gauge":
				v.Value = m.GetGauge().GetValue()
			case "summary":
				v.Value, v.Count = m.GetSummary().GetSampleSum(), m.GetSummary().GetSampleCount()
			}
			out = append(out, v)
		}
		return out, strings.ToLower(f.GetType().String())
	}
	return nil, ""
}

// Counter returns the counter name summed over its series (every status,
// for a call counter), or -1 when it was never emitted.
func (r *Recorder) Counter(name string) float64 {
	r.t.Helper()
	return r.sum(name, "counter", func(v Value) float64 { return v.Value })
}

// Gauge returns the gauge name, or -1 when it was never set. A gauge with
// several series is a test bug.
func (r *Recorder) Gauge(name string) float64 {
	r.t.Helper()
	vs, typ := r.Family(name)
	if typ == "" {
		return -1
	}
	if typ != "gauge" || len(vs) != 1 {
		r.t.Fatalf("%s: %d series of a %s, want one gauge", name, len(vs), typ)
	}
	return vs[0].Value
}

// Samples returns the number of observations and their sum in the summary
// name, or -1 and 0 when nothing was observed.
func (r *Recorder) Samples(name string) (count int, sum float64) {
	r.t.Helper()
	n := r.sum(name, "summary", func(v Value) float64 { return float64(v.Count) })
	if n < 0 {
		return -1, 0
	}
	return int(n), r.sum(name, "summary", func(v Value) float64 { return v.Value })
}

// Calls returns how many calls the call counter name counted with this
// status ("OK", "Unknown", ...), checking that its elapsed_time summary
// observed the same number; -1 when none.
func (r *Recorder) Calls(name, status string) int {
	r.t.Helper()
	count := func(fam string, get func(Value) float64) float64 {
		vs, _ := r.Family(fam)
		n := -1.0
		for _, v := range vs {
			if v.Labels["status"] == status {
				n = max(n, 0) + get(v)
			}
		}
		return n
	}
	// A call is emitted as two metrics one after the other, so a read
	// between them sees the counter and not yet the timing: only a
	// mismatch that lasts is a defect.
	var n, timed float64
	for try := 0; ; try++ {
		n = count(name, func(v Value) float64 { return v.Value })
		timed = count(name+"_elapsed_time", func(v Value) float64 { return float64(v.Count) })
		if timed == n {
			return int(n)
		}
		if try == 50 {
			r.t.Fatalf("%s{status=%q}: %v calls but %v timings", name, status, n, timed)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *Recorder) sum(name, want string, get func(Value) float64) float64 {
	r.t.Helper()
	vs, typ := r.Family(name)
	if typ == "" {
		return -1
	}
	if typ != want {
		r.t.Fatalf("%s is a %s, want a %s", name, typ, want)
	}
	total := 0.0
	for _, v := range vs {
		total += get(v)
	}
	return total
}
