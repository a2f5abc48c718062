// Package healthz serves SPIRE's health_checks HTTP endpoints (live and
// ready paths) for the server and the agent alike.
package healthz

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// New returns the health server for hc. The live path answers 200 while the
// process runs; the ready path answers 200 while ready returns nil, and 503
// with its error otherwise.
func New(hc hclconf.HealthChecks, ready func(context.Context) error) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc(hc.LivePath, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc(hc.ReadyPath, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return &http.Server{
		Addr:              net.JoinHostPort(hc.BindAddress, strconv.Itoa(hc.BindPort)),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
}

// Serve runs srv until ctx ends, then shuts it down; what names it in the
// log ("health checks").
func Serve(ctx context.Context, srv *http.Server, log *slog.Logger, what string) error {
	errs := make(chan error, 1)
	go func() { errs <- srv.ListenAndServe() }()
	log.Info("Serving "+what, "address", srv.Addr)
	select {
	case err := <-errs:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}
