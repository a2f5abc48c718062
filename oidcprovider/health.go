package oidcprovider

import (
	"net/http"
	"time"
)

// The ready and live checks tolerate a source that stops answering for
// five poll intervals, and at least three minutes, as SPIRE documents.
const (
	thresholdFactor = 5
	thresholdMin    = 3 * time.Minute
)

// healthThreshold is how long after the last successful poll the provider
// still counts as healthy.
func healthThreshold(pollInterval time.Duration) time.Duration {
	return max(pollInterval*thresholdFactor, thresholdMin)
}

// healthHandler answers SPIRE's live and ready checks: 200, or 500 when
// the keys are missing or stale.
type healthHandler struct {
	source    keySource
	cfg       HealthChecks
	threshold time.Duration
	start     time.Time
	now       func() time.Time
}

func newHealthHandler(source keySource, cfg HealthChecks, pollInterval time.Duration) *healthHandler {
	return &healthHandler{source: source, cfg: cfg, threshold: healthThreshold(pollInterval), start: time.Now(), now: time.Now}
}

func (h *healthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ok bool
	switch r.URL.Path {
	case h.cfg.ReadyPath:
		ok = h.ready()
	case h.cfg.LivePath:
		ok = h.live()
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !ok {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// ready: keys were fetched, recently enough.
func (h *healthHandler) ready() bool {
	last := h.source.LastSuccessfulPoll()
	return !last.IsZero() && h.now().Sub(last) < h.threshold
}

// live: ready, or still within the threshold after start for a source
// that has not answered yet (a provider started before its server).
func (h *healthHandler) live() bool {
	if h.source.LastSuccessfulPoll().IsZero() {
		return h.now().Sub(h.start) < h.threshold
	}
	return h.ready()
}
