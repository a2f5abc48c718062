package plugin

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/spiffe-hw/spire-hw/telemetry"
)

// MetricsSink is where the Metrics host service sends what plugins emit:
// the daemon's *telemetry.Metrics, whose nil value drops everything.
type MetricsSink interface {
	SetGauge(key []string, val float32, labels ...telemetry.Label)
	IncrCounter(key []string, val float32, labels ...telemetry.Label)
	AddSample(key []string, val float32, labels ...telemetry.Label)
	MeasureSince(key []string, start time.Time, labels ...telemetry.Label)
	EmitKey(key []string, val float32)
}

// Bounds of what one daemon keeps track of for its plugins' metrics.
const (
	// maxPluginFamilies bounds the names whose kind is remembered; a new
	// name past it is dropped, so a plugin cannot grow the sinks without
	// limit.
	maxPluginFamilies = 1024
	// maxDropWarnings bounds the warnings about dropped metrics, one per
	// name, so that a plugin emitting garbage cannot flood the log.
	maxDropWarnings = 64
)

// MetricsService is SPIRE's Metrics host service: what a plugin emits goes
// to every sink of the daemon's telemetry block (Prometheus, DogStatsd,
// Statsd, M3, InMem) under the daemon's prefix, with its key as is and
// its labels sanitized as the daemon's own (SPIRE hands plugins its own
// Metrics). A metric that would break a sink (see
// telemetry.CheckExternal), a key reused as another kind, and a negative
// counter increment, which Prometheus cannot count, are dropped with a
// warning; the plugin's call still succeeds, as in SPIRE, where emitting
// never fails. A nil sink drops everything.
func MetricsService(sink MetricsSink, log *slog.Logger) pluginsdk.ServiceServer {
	return metricsv1.MetricsServiceServer(newMetricsHost(sink, log))
}

func newMetricsHost(sink MetricsSink, log *slog.Logger) *metricsHost {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if sink == nil {
		sink = (*telemetry.Metrics)(nil) // drops everything
	}
	return &metricsHost{sink: sink, log: log, kinds: make(map[string]string), warned: make(map[string]bool)}
}

type metricsHost struct {
	metricsv1.UnsafeMetricsServer
	sink MetricsSink
	log  *slog.Logger

	mu sync.Mutex
	// kinds is the kind each name was first emitted as: Prometheus keeps
	// one type per name.
	kinds  map[string]string
	warned map[string]bool
}

// flatName is the name the sinks make of a key (Prometheus and statsd
// differ only in the separator).
var flatName = strings.NewReplacer(" ", "_", ".", "_", "=", "_", "-", "_", "/", "_")

// admit converts and checks a plugin's metric, and reports whether it may
// go to the sinks.
func (m *metricsHost) admit(kind string, key []string, val float64, in []*metricsv1.Label) ([]telemetry.Label, bool) {
	labels := make([]telemetry.Label, 0, len(in))
	for _, l := range in {
		if l != nil {
			labels = append(labels, telemetry.Label{Name: l.Name, Value: l.Value})
		}
	}
	if err := telemetry.CheckExternal(key, val, labels); err != nil {
		m.drop(strings.Join(key, "."), err.Error())
		return nil, false
	}
	if kind == "counter" && val < 0 {
		m.drop(strings.Join(key, "."), "negative counter increment")
		return nil, false
	}
	if kind == "key" {
		// Only the statsd sinks keep these, under a kv type of their own.
		return nil, true
	}
	// One order, so that the same labels in another order are the same
	// series: Prometheus refuses two series of one name and label set.
	slices.SortFunc(labels, func(a, b telemetry.Label) int { return strings.Compare(a.Name, b.Name) })
	name := flatName.Replace(strings.Join(key, "_"))
	m.mu.Lock()
	_, ok := m.kinds[name]
	clash := m.clash(name, kind)
	switch {
	case clash != "":
		m.mu.Unlock()
		m.drop(name, clash)
		return nil, false
	case !ok && len(m.kinds) >= maxPluginFamilies:
		m.mu.Unlock()
		m.drop(name, "too many plugin metric names")
		return nil, false
	case !ok:
		m.kinds[name] = kind
	}
	m.mu.Unlock()
	return labels, true
}

// clash says why name cannot be a kind, or "": it was another kind
// before, or it collides with the _sum and _count series of a summary
// (a sample). Call with mu held.
func (m *metricsHost) clash(name, kind string) string {
	if have, ok := m.kinds[name]; ok && have != kind {
		return "emitted as a " + have + " before, now as a " + kind
	}
	for _, suffix := range []string{"_sum", "_count"} {
		if _, ok := m.kinds[name+suffix]; ok && kind == "sample" {
			return "a summary's " + suffix + " series would clash with " + name + suffix
		}
		if base, ok := strings.CutSuffix(name, suffix); ok && m.kinds[base] == "sample" {
			return "clashes with the " + suffix + " series of summary " + base
		}
	}
	return ""
}

func (m *metricsHost) drop(name, reason string) {
	m.mu.Lock()
	if m.warned[name] || len(m.warned) > maxDropWarnings {
		m.mu.Unlock()
		return
	}
	m.warned[name] = true
	last := len(m.warned) > maxDropWarnings
	m.mu.Unlock()
	m.log.Warn("Dropping a plugin metric", "metric", name, "reason", reason)
	if last {
		m.log.Warn("Dropping further plugin metrics without a warning", "warned", maxDropWarnings)
	}
}

func (m *metricsHost) SetGauge(_ context.Context, req *metricsv1.SetGaugeRequest) (*emptypb.Empty, error) {
	if l, ok := m.admit("gauge", req.GetKey(), float64(req.GetVal()), req.GetLabels()); ok {
		m.sink.SetGauge(req.GetKey(), req.GetVal(), l...)
	}
	return &emptypb.Empty{}, nil
}

func (m *metricsHost) EmitKey(_ context.Context, req *metricsv1.EmitKeyRequest) (*emptypb.Empty, error) {
	if _, ok := m.admit("key", req.GetKey(), float64(req.GetVal()), nil); ok {
		m.sink.EmitKey(req.GetKey(), req.GetVal())
	}
	return &emptypb.Empty{}, nil
}

func (m *metricsHost) IncrCounter(_ context.Context, req *metricsv1.IncrCounterRequest) (*emptypb.Empty, error) {
	if l, ok := m.admit("counter", req.GetKey(), float64(req.GetVal()), req.GetLabels()); ok {
		m.sink.IncrCounter(req.GetKey(), req.GetVal(), l...)
	}
	return &emptypb.Empty{}, nil
}

func (m *metricsHost) AddSample(_ context.Context, req *metricsv1.AddSampleRequest) (*emptypb.Empty, error) {
	if l, ok := m.admit("sample", req.GetKey(), float64(req.GetVal()), req.GetLabels()); ok {
		m.sink.AddSample(req.GetKey(), req.GetVal(), l...)
	}
	return &emptypb.Empty{}, nil
}

// MeasureSince records the time since req.Time (Unix nanoseconds, as SPIRE
// sends it) as a sample in milliseconds, as go-metrics does.
func (m *metricsHost) MeasureSince(_ context.Context, req *metricsv1.MeasureSinceRequest) (*emptypb.Empty, error) {
	if l, ok := m.admit("sample", req.GetKey(), 0, req.GetLabels()); ok {
		m.sink.MeasureSince(req.GetKey(), time.Unix(0, req.GetTime()), l...)
	}
	return &emptypb.Empty{}, nil
}
