package telemetry

import (
	"io"
	"strings"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/uber-go/tally/v4"
	"github.com/uber-go/tally/v4/m3"
)

// m3Sink adapts a tally scope reporting to M3 to go-metrics, as SPIRE's
// M3 sink does: go-metrics hands it keys as [service, type, key...] (the
// type prefix is on for M3), the service travels as M3's service tag, the
// type tells a timer (a duration histogram) from a sample (a value
// histogram), and the rest of the key, joined with '_', names the metric.
type m3Sink struct {
	scope  tally.Scope
	closer io.Closer
}

// M3's histogram buckets: SPIRE's, so that the same quantiles are
// computable from either.
var (
	m3DurationBuckets = tally.DurationBuckets{0, 10 * time.Millisecond, 25 * time.Millisecond,
		50 * time.Millisecond, 75 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
		300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond, 600 * time.Millisecond,
		800 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
		15 * time.Second, 20 * time.Second, 25 * time.Second, 30 * time.Second}
	m3ValueBuckets = append(tally.ValueBuckets{0}, tally.MustMakeExponentialValueBuckets(1, 10, 5)...)
)

func newM3Sink(service, address, env string) (*m3Sink, error) {
	r, err := m3.Configuration{HostPort: address, Service: service, Env: env}.NewReporter()
	if err != nil {
		return nil, err
	}
	scope, closer := tally.NewRootScope(tally.ScopeOptions{CachedReporter: r}, time.Second)
	return &m3Sink{scope: scope, closer: closer}, nil
}

// close flushes the scope and closes the reporter's socket.
func (s *m3Sink) close() { _ = s.closer.Close() }

func (s *m3Sink) tagged(labels []metrics.Label) tally.Scope {
	if len(labels) == 0 {
		return s.scope
	}
	tags := make(map[string]string, len(labels))
	for _, l := range labels {
		tags[l.Name] = l.Value
	}
	return s.scope.Tagged(tags)
}

// name drops the service and type parts; a key too short to carry them is
// a bug upstream and is dropped.
func m3Name(key []string) (string, bool) {
	if len(key) < 3 {
		return "", false
	}
	return strings.Join(key[2:], "_"), true
}

func (s *m3Sink) SetGauge(key []string, val float32) { s.SetGaugeWithLabels(key, val, nil) }

func (s *m3Sink) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	if n, ok := m3Name(key); ok {
		s.tagged(labels).Gauge(n).Update(float64(val))
	}
}

// EmitKey has no M3 equivalent; SPIRE drops it too.
func (s *m3Sink) EmitKey([]string, float32) {}

func (s *m3Sink) IncrCounter(key []string, val float32) { s.IncrCounterWithLabels(key, val, nil) }

func (s *m3Sink) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	if n, ok := m3Name(key); ok {
		s.tagged(labels).Counter(n).Inc(int64(val))
	}
}

func (s *m3Sink) AddSample(key []string, val float32) { s.AddSampleWithLabels(key, val, nil) }

func (s *m3Sink) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	n, ok := m3Name(key)
	if !ok {
		return
	}
	if key[1] == "timer" {
		// MeasureSince's value is in go-metrics' granularity, milliseconds.
		s.tagged(labels).Histogram(n, m3DurationBuckets).RecordDuration(time.Duration(float64(val) * float64(time.Millisecond)))
		return
	}
	s.tagged(labels).Histogram(n, m3ValueBuckets).RecordValue(float64(val))
}
