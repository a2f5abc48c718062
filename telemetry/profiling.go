package telemetry

import (
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"
)

// ProfilingServer serves net/http/pprof on localhost:port only: profiles
// show memory contents and cost CPU, so they are never offered to the
// network. Run it with healthz.Serve.
func ProfilingServer(port int) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Addr: net.JoinHostPort("localhost", strconv.Itoa(port)), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
