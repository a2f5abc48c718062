package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// readier is a plugin that can say whether it can serve now (an HSM whose
// token is present).
type readier interface{ Ready(context.Context) error }

// newHealthServer serves SPIRE's health_checks HTTP endpoints: live while
// the process runs, ready while the datastore answers and every plugin that
// can tell (key manager, upstream authority) is ready.
func newHealthServer(hc hclconf.HealthChecks, ds datastore.DataStore, plugins ...any) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc(hc.LivePath, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc(hc.ReadyPath, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := ds.EntriesRevision(ctx); err != nil {
			http.Error(w, "datastore unavailable", http.StatusServiceUnavailable)
			return
		}
		for _, p := range plugins {
			if r, ok := p.(readier); ok && r != nil {
				if err := r.Ready(ctx); err != nil {
					http.Error(w, "signing key unavailable", http.StatusServiceUnavailable)
					return
				}
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	return &http.Server{
		Addr:              net.JoinHostPort(hc.BindAddress, strconv.Itoa(hc.BindPort)),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
}

func serveHealth(ctx context.Context, srv *http.Server, log *slog.Logger) error {
	errs := make(chan error, 1)
	go func() { errs <- srv.ListenAndServe() }()
	log.Info("Serving health checks", "address", srv.Addr)
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
