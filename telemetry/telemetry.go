// Package telemetry serves Prometheus metrics for the server and the agent
// (SPIRE's telemetry { Prometheus { host, port } } block) and counts their
// gRPC calls.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors, to which components add their own.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Endpoint is a bound /metrics listener.
type Endpoint struct {
	l   net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds the Prometheus endpoint of cfg, so that a port already in
// use stops start-up rather than a metric-less run.
func Listen(cfg hclconf.Prometheus, reg *prometheus.Registry, log *slog.Logger) (*Endpoint, error) {
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: listen for Prometheus on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	// ContinueOnError: a family that fails to gather (an external plugin's
	// metric that clashes with another's type) is logged and left out,
	// rather than failing every scrape, as HTTPErrorOnError would.
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: slogPrinter{log},
		ErrorHandling: promhttp.ContinueOnError}))
	return &Endpoint{l: l, log: log, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the bound address.
func (e *Endpoint) Addr() net.Addr { return e.l.Addr() }

// Serve answers scrapes until ctx ends.
func (e *Endpoint) Serve(ctx context.Context) error {
	errs := make(chan error, 1)
	go func() { errs <- e.srv.Serve(e.l) }()
	e.log.Info("Serving Prometheus metrics", "address", e.l.Addr().String(), "path", "/metrics")
	select {
	case err := <-errs:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("telemetry: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return e.srv.Shutdown(sctx)
	}
}

// Close releases the listener of an endpoint that was never served; after
// Serve it does nothing.
func (e *Endpoint) Close() error {
	if err := e.l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("telemetry: %w", err)
	}
	return nil
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("telemetry: " + fmt.Sprint(v...)) }
