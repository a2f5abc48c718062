package telemetry

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/hashicorp/go-metrics/datadog"
	prommetrics "github.com/hashicorp/go-metrics/prometheus"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// inmem retention and interval are SPIRE's.
const (
	inmemInterval  = time.Second
	inmemRetention = time.Hour
)

// sink is one kind of sink (all Statsd collectors are one fanout) and
// whether its keys carry go-metrics' type prefix.
type sink struct {
	sink       metrics.MetricSink
	typePrefix bool
}

// buildSinks makes the sinks of cfg in SPIRE's order, registering their
// closers and background work on m.
func (m *Metrics) buildSinks(cfg hclconf.Telemetry, opts Options) ([]sink, error) {
	var out []sink
	if len(cfg.DogStatsd) > 0 {
		var fan metrics.FanoutSink
		for _, c := range cfg.DogStatsd {
			s, err := datadog.NewDogStatsdSink(c.Address, "")
			if err != nil {
				return nil, fmt.Errorf("telemetry: DogStatsd %s: %w", c.Address, err)
			}
			g := guard(s, s.Shutdown)
			m.closers = append(m.closers, g.close)
			fan = append(fan, g)
			opts.Log.Info("Sending metrics to DogStatsd", "address", c.Address)
		}
		out = append(out, sink{sink: fan})
	}
	if cfg.InMem {
		s := metrics.NewInmemSink(inmemInterval, inmemRetention)
		m.inmemSinks = append(m.inmemSinks, s)
		m.runners = append(m.runners, func(ctx context.Context) { runInmemSignal(ctx, s, opts.Log) })
		out = append(out, sink{sink: s})
	}
	if cfg.Prometheus != nil {
		if opts.Registry == nil {
			return nil, errNoRegistry
		}
		// No expiration, as SPIRE: a family seen once stays exported.
		s, err := prommetrics.NewPrometheusSinkFrom(prommetrics.PrometheusOpts{Registerer: opts.Registry})
		if err != nil {
			return nil, fmt.Errorf("telemetry: Prometheus sink: %w", err)
		}
		m.closers = append(m.closers, func() { opts.Registry.Unregister(s) })
		out = append(out, sink{sink: s})
	}
	if len(cfg.Statsd) > 0 {
		var fan metrics.FanoutSink
		for _, c := range cfg.Statsd {
			s, err := metrics.NewStatsdSinkWithLogger(c.Address, opts.Log.With("address", c.Address))
			if err != nil {
				return nil, fmt.Errorf("telemetry: Statsd %s: %w", c.Address, err)
			}
			g := guard(s, s.Shutdown)
			m.closers = append(m.closers, g.close)
			fan = append(fan, g)
			opts.Log.Info("Sending metrics to Statsd", "address", c.Address)
		}
		out = append(out, sink{sink: fan})
	}
	if len(cfg.M3) > 0 {
		var fan metrics.FanoutSink
		for _, c := range cfg.M3 {
			s, err := newM3Sink(opts.Service, c.Address, c.Env)
			if err != nil {
				return nil, fmt.Errorf("telemetry: M3 %s: %w", c.Address, err)
			}
			g := guard(s, s.close)
			m.closers = append(m.closers, g.close)
			fan = append(fan, g)
			opts.Log.Info("Sending metrics to M3", "address", c.Address, "env", c.Env)
		}
		out = append(out, sink{sink: fan, typePrefix: true})
	}
	return out, nil
}

// runInmemSignal dumps the in-memory sink to the log on SIGUSR1, as SPIRE
// does, until ctx ends.
func runInmemSignal(ctx context.Context, s *metrics.InmemSink, log *slog.Logger) {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			log.Info(sc.Text(), "subsystem", "telemetry_inmem")
		}
	}()
	h := metrics.NewInmemSignal(s, metrics.DefaultSignal, w)
	<-ctx.Done()
	h.Stop()
	w.Close()
}

// guarded drops what is emitted after close: the statsd sink panics on a
// metric sent after its Shutdown, and components may still emit while the
// daemon stops.
type guarded struct {
	mu     sync.RWMutex
	closed bool
	sink   metrics.MetricSink
	stop   func()
}

func guard(s metrics.MetricSink, stop func()) *guarded { return &guarded{sink: s, stop: stop} }

func (g *guarded) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.stop()
	}
}

func (g *guarded) emit(f func(metrics.MetricSink)) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if !g.closed {
		f(g.sink)
	}
}

func (g *guarded) SetGauge(key []string, val float32) {
	g.emit(func(s metrics.MetricSink) { s.SetGauge(key, val) })
}

func (g *guarded) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	g.emit(func(s metrics.MetricSink) { s.SetGaugeWithLabels(key, val, labels) })
}

func (g *guarded) EmitKey(key []string, val float32) {
	g.emit(func(s metrics.MetricSink) { s.EmitKey(key, val) })
}

func (g *guarded) IncrCounter(key []string, val float32) {
	g.emit(func(s metrics.MetricSink) { s.IncrCounter(key, val) })
}

func (g *guarded) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	g.emit(func(s metrics.MetricSink) { s.IncrCounterWithLabels(key, val, labels) })
}

func (g *guarded) AddSample(key []string, val float32) {
	g.emit(func(s metrics.MetricSink) { s.AddSample(key, val) })
}

func (g *guarded) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	g.emit(func(s metrics.MetricSink) { s.AddSampleWithLabels(key, val, labels) })
}

// inmem returns the in-memory sink, for tests.
func (m *Metrics) inmem() *metrics.InmemSink {
	for _, s := range m.inmemSinks {
		return s
	}
	return nil
}
