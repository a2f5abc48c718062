package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// Service names, the first part of every metric name unless the telemetry
// block sets MetricPrefix; SPIRE's are the same.
const (
	ServerService = "spire_server"
	AgentService  = "spire_agent"
)

// Label is a metric label (a tag, for the statsd family of sinks).
type Label = metrics.Label

// Options say who emits.
type Options struct {
	// Service is ServerService or AgentService.
	Service string
	// TrustDomain is the started gauge's trust_domain_id, and the
	// trust_domain label when EnableTrustDomainLabel is set.
	TrustDomain string
	// Version is the started gauge's version label; empty takes the main
	// module's version from the build information.
	Version string
	// Registry receives the Prometheus sink; it must be set when the
	// telemetry block has a Prometheus block.
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// Metrics sends metrics, named by SPIRE's keys, to every sink of the
// telemetry block, through hashicorp/go-metrics as SPIRE does, so that each
// sink names them exactly as it names SPIRE's: Prometheus joins the prefix
// and the key parts with '_' (spire_server_rpc_agent_v1_agent_attest_agent),
// statsd with '.'.
//
// A nil *Metrics drops everything, so that components emit without checking
// whether telemetry is configured.
type Metrics struct {
	// perSink holds one go-metrics front per kind of sink: M3 needs the type
	// prefix (counter, gauge, timer) in its keys and the others must not
	// have it, as in SPIRE.
	perSink []*metrics.Metrics
	// tdLabel is the trust_domain label added to every labelled metric, or
	// the zero Label.
	tdLabel Label
	started []Label
	start   time.Time
	runners []func(context.Context)
	closers []func()
	// inmemSinks is the InMem sink, if configured.
	inmemSinks []*metrics.InmemSink
	log        *slog.Logger
}

// New builds the sinks of cfg. With no sink configured it returns nil, a
// valid Metrics that drops everything.
func New(cfg hclconf.Telemetry, opts Options) (*Metrics, error) {
	if !cfg.Configured() {
		return nil, nil
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{start: time.Now(), log: opts.Log}
	sinks, err := m.buildSinks(cfg, opts)
	if err != nil {
		m.shutdown()
		return nil, err
	}
	prefix := opts.Service
	if cfg.MetricPrefix != "" {
		prefix = cfg.MetricPrefix
	}
	for _, s := range sinks {
		conf := metrics.DefaultConfig(prefix)
		// SPIRE's choices: the host as a label, not a key part.
		conf.EnableHostname = false
		conf.EnableHostnameLabel = cfg.EnableHostnameLabel
		conf.EnableTypePrefix = s.typePrefix
		// The runtime statistics are emitted by Run, which stops with the
		// daemon; go-metrics' own collector goroutine never stops.
		conf.EnableRuntimeMetrics = false
		conf.AllowedPrefixes, conf.BlockedPrefixes = cfg.AllowedPrefixes, cfg.BlockedPrefixes
		conf.AllowedLabels, conf.BlockedLabels = cfg.AllowedLabels, cfg.BlockedLabels
		front, err := metrics.New(conf, s.sink)
		if err != nil {
			m.shutdown()
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		m.perSink = append(m.perSink, front)
	}
	if cfg.EnableTrustDomainLabel {
		m.tdLabel = Label{Name: "trust_domain", Value: opts.TrustDomain}
	}
	version := opts.Version
	if version == "" {
		version = buildVersion()
	}
	m.started = []Label{{Name: "version", Value: version}, {Name: "trust_domain_id", Value: opts.TrustDomain}}
	return m, nil
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// uptimeInterval is SPIRE's period for uptime_in_ms.
const uptimeInterval = 10 * time.Second

// Run emits the started gauge, then uptime_in_ms and the Go runtime
// statistics (runtime.*, as go-metrics names them) until ctx ends; then it
// flushes and closes the sinks.
func (m *Metrics) Run(ctx context.Context) error {
	if m == nil {
		<-ctx.Done()
		return nil
	}
	defer m.shutdown()
	m.SetGauge([]string{"started"}, 1, m.started...)
	for _, r := range m.runners {
		go r(ctx)
	}
	runtime := time.NewTicker(time.Second)
	defer runtime.Stop()
	uptime := time.NewTicker(uptimeInterval)
	defer uptime.Stop()
	m.emitUptime()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-runtime.C:
			for _, s := range m.perSink {
				s.EmitRuntimeStats()
			}
		case <-uptime.C:
			m.emitUptime()
		}
	}
}

func (m *Metrics) emitUptime() {
	m.SetGauge([]string{"uptime_in_ms"}, float32(time.Since(m.start)/time.Millisecond))
}

// shutdown flushes and closes the sinks that hold sockets or goroutines.
func (m *Metrics) shutdown() {
	for _, c := range m.closers {
		c()
	}
	m.closers = nil
}

// labels returns labels with the trust domain label and SPIRE's
// sanitization: every run of non-word characters in a name or value
// becomes one '_', so that a SPIFFE ID or a path makes a valid label.
func (m *Metrics) labels(labels []Label) []Label {
	if m.tdLabel.Name != "" {
		labels = append(labels[:len(labels):len(labels)], m.tdLabel)
	}
	if len(labels) == 0 {
		return nil
	}
	out := make([]Label, len(labels))
	for i, l := range labels {
		out[i] = Label{Name: sanitize(l.Name), Value: sanitize(l.Value)}
	}
	return out
}

var invalidLabelChars = regexp.MustCompile(`\W+_?`)

func sanitize(s string) string { return invalidLabelChars.ReplaceAllString(s, "_") }

// SetGauge sets the gauge key to val.
func (m *Metrics) SetGauge(key []string, val float32, labels ...Label) {
	if m == nil {
		return
	}
	l := m.labels(labels)
	for _, s := range m.perSink {
		s.SetGaugeWithLabels(key, val, l)
	}
}

// IncrCounter adds val to the counter key.
func (m *Metrics) IncrCounter(key []string, val float32, labels ...Label) {
	if m == nil {
		return
	}
	l := m.labels(labels)
	for _, s := range m.perSink {
		s.IncrCounterWithLabels(key, val, l)
	}
}

// AddSample adds val to the sample (a summary in Prometheus) key.
func (m *Metrics) AddSample(key []string, val float32, labels ...Label) {
	if m == nil {
		return
	}
	l := m.labels(labels)
	for _, s := range m.perSink {
		s.AddSampleWithLabels(key, val, l)
	}
}

// MeasureSince adds the milliseconds since start to the sample key.
func (m *Metrics) MeasureSince(key []string, start time.Time, labels ...Label) {
	if m == nil {
		return
	}
	l := m.labels(labels)
	for _, s := range m.perSink {
		s.MeasureSinceWithLabels(key, start, l)
	}
}

// errNoRegistry is a wiring bug: a Prometheus block without a registry.
var errNoRegistry = errors.New("telemetry: a Prometheus sink needs a registry")
