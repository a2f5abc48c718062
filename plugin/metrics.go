package plugin

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	"google.golang.org/protobuf/types/known/emptypb"
)

// MetricsService is SPIRE's Metrics host service: what a plugin emits is
// exported on the daemon's Prometheus registry under prefix (e.g.
// "spire_server"), with SPIRE's key joined by underscores as the name.
// With a nil registry (no telemetry configured) samples are dropped, as
// SPIRE drops them without a sink.
func MetricsService(reg prometheus.Registerer, prefix string, log *slog.Logger) pluginsdk.ServiceServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return metricsv1.MetricsServiceServer(&metricsHost{reg: reg, prefix: prefix, log: log, vecs: make(map[string]metricVec)})
}

type metricsHost struct {
	metricsv1.UnsafeMetricsServer
	reg    prometheus.Registerer
	prefix string
	log    *slog.Logger

	mu   sync.Mutex
	vecs map[string]metricVec
}

// metricVec is one registered family and the label names it was made with:
// Prometheus needs them fixed per name.
type metricVec struct {
	kind   string
	labels []string
	gauge  *prometheus.GaugeVec
	count  *prometheus.CounterVec
	sample *prometheus.SummaryVec
}

var metricNameReplacer = strings.NewReplacer("-", "_", ".", "_", " ", "_", "/", "_")

func (m *metricsHost) name(key []string) string {
	parts := append([]string{m.prefix}, key...)
	return metricNameReplacer.Replace(strings.Join(parts, "_"))
}

// vec returns the family for key, creating it on first use. A key reused
// with another kind or other label names is dropped with a warning, once.
func (m *metricsHost) vec(kind string, key []string, labels []*metricsv1.Label) (metricVec, []string, bool) {
	if m.reg == nil || len(key) == 0 {
		return metricVec{}, nil, false
	}
	names := make([]string, len(labels))
	values := make([]string, len(labels))
	for i, l := range labels {
		names[i] = metricNameReplacer.Replace(l.GetName())
		values[i] = l.GetValue()
	}
	name := m.name(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.vecs[name]; ok {
		if v.kind != kind || !slices.Equal(v.labels, names) {
			return metricVec{}, nil, false
		}
		return v, values, true
	}
	v := metricVec{kind: kind, labels: names}
	var c prometheus.Collector
	help := "Emitted by an external plugin."
	switch kind {
	case "gauge":
		v.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, names)
		c = v.gauge
	case "counter":
		v.count = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, names)
		c = v.count
	default:
		v.sample = prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: name, Help: help, Objectives: map[float64]float64{0.5: 0.05, 0.99: 0.001}}, names)
		c = v.sample
	}
	if err := m.reg.Register(c); err != nil {
		m.log.Warn("Dropping a plugin metric", "metric", name, "error", err)
		v = metricVec{kind: "invalid", labels: names}
		m.vecs[name] = v
		return v, nil, false
	}
	m.vecs[name] = v
	return v, values, true
}

func (m *metricsHost) SetGauge(_ context.Context, req *metricsv1.SetGaugeRequest) (*emptypb.Empty, error) {
	if v, vals, ok := m.vec("gauge", req.GetKey(), req.GetLabels()); ok {
		v.gauge.WithLabelValues(vals...).Set(float64(req.GetVal()))
	}
	return &emptypb.Empty{}, nil
}

func (m *metricsHost) EmitKey(_ context.Context, req *metricsv1.EmitKeyRequest) (*emptypb.Empty, error) {
	if v, vals, ok := m.vec("gauge", req.GetKey(), nil); ok {
		v.gauge.WithLabelValues(vals...).Set(float64(req.GetVal()))
	}
	return &emptypb.Empty{}, nil
}

func (m *metricsHost) IncrCounter(_ context.Context, req *metricsv1.IncrCounterRequest) (*emptypb.Empty, error) {
	if req.GetVal() < 0 {
		return &emptypb.Empty{}, nil // a Prometheus counter only goes up
	}
	if v, vals, ok := m.vec("counter", req.GetKey(), req.GetLabels()); ok {
		v.count.WithLabelValues(vals...).Add(float64(req.GetVal()))
	}
	return &emptypb.Empty{}, nil
}

func (m *metricsHost) AddSample(_ context.Context, req *metricsv1.AddSampleRequest) (*emptypb.Empty, error) {
	if v, vals, ok := m.vec("sample", req.GetKey(), req.GetLabels()); ok {
		v.sample.WithLabelValues(vals...).Observe(float64(req.GetVal()))
	}
	return &emptypb.Empty{}, nil
}

// MeasureSince records the time since req.Time (Unix nanoseconds, as SPIRE
// sends it) in milliseconds, as go-metrics does.
func (m *metricsHost) MeasureSince(_ context.Context, req *metricsv1.MeasureSinceRequest) (*emptypb.Empty, error) {
	if v, vals, ok := m.vec("sample", req.GetKey(), req.GetLabels()); ok {
		ms := float64(time.Since(time.Unix(0, req.GetTime()))) / float64(time.Millisecond)
		v.sample.WithLabelValues(vals...).Observe(ms)
	}
	return &emptypb.Empty{}, nil
}
