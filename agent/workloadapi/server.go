package workloadapi

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/sds"
	"github.com/spiffe-hw/spire-hw/internal/unixsock"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Listen creates the Workload API socket, mode 0777 like SPIRE's public
// socket (every local process may ask; the answer depends on who asks). A
// missing directory is created 0755; an existing one is left as it is. A
// stale socket left by a previous run is removed, a live one or anything
// that is not a socket is refused (internal/unixsock). Closing the listener
// removes the socket.
func Listen(socketPath string) (net.Listener, error) {
	l, err := unixsock.Listen(socketPath, 0o777, 0o755)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: socket_path: %w", err)
	}
	return l, nil
}

// NewServer returns a gRPC server that identifies each caller through its
// pidfd and serves h, Envoy SDS v3 with SPIRE's default names on the same
// attestation and cache view, and the standard gRPC health service (which
// SPIRE's newer healthcheck command queries). Further server options are
// appended.
func NewServer(h *Handler, opts ...grpc.ServerOption) (*grpc.Server, error) {
	return newServer(h, sds.Settings{}, opts...)
}

func newServer(h *Handler, sdsSettings sds.Settings, opts ...grpc.ServerOption) (*grpc.Server, error) {
	creds, err := peer.NewCredentials(h.c.Log)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: %w", err)
	}
	s := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(creds)}, opts...)...)
	workload.RegisterSpiffeWorkloadAPIServer(s, h)
	secretv3.RegisterSecretDiscoveryServiceServer(s, sds.New(sds.Config{Settings: sdsSettings, Attest: h.attestCaller, Manager: h.c.Manager}))
	if h.c.Ready != nil {
		healthpb.RegisterHealthServer(s, readyHealth{ready: h.c.Ready, log: h.c.Log})
	} else {
		healthpb.RegisterHealthServer(s, health.NewServer())
	}
	return s, nil
}

// readyHealth is the gRPC health service answered from the agent's
// readiness, as SPIRE's agent answers it from its own check: the whole
// server only, no per-service status and no Watch.
type readyHealth struct {
	healthpb.UnimplementedHealthServer
	ready func() error
	log   *slog.Logger
}

func (r readyHealth) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() != "" {
		return nil, status.Error(codes.InvalidArgument, "per-service health is not supported")
	}
	if err := r.ready(); err != nil {
		r.log.Warn("Health check failed", "reason", err)
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// ServeConfig is what Serve needs besides the handler.
type ServeConfig struct {
	// SocketPath is the Workload API socket (see Listen).
	SocketPath string
	// Limits are the connection caps and timeouts (zero: defaults).
	Limits Limits
	// SDS is the agent's sds block (zero: SPIRE's default names).
	SDS sds.Settings
	// Metrics, if set, gets the connection metrics:
	// spire_agent_workload_api_socket_connections_accepted_total,
	// spire_agent_workload_api_socket_connections (open) and
	// spire_agent_workload_api_connections_refused_total{reason}.
	Metrics prometheus.Registerer
}

// Serve listens on cfg.SocketPath and serves h until ctx is done, within
// cfg.Limits' connection caps and timeouts; opts are added to the gRPC
// server's (interceptors, for instance).
func Serve(ctx context.Context, cfg ServeConfig, h *Handler, opts ...grpc.ServerOption) error {
	l, err := Listen(cfg.SocketPath)
	if err != nil {
		return err
	}
	s, err := newServer(h, cfg.SDS, append(ServerOptions(cfg.Limits), opts...)...)
	if err != nil {
		l.Close()
		return err
	}
	eff := cfg.Limits.Effective()
	h.c.Log.Info("Workload API connection limits", "max_connections", eff.MaxConnections,
		"max_connections_per_uid", eff.MaxConnectionsPerUID,
		"handshake_timeout", eff.HandshakeTimeout, "idle_timeout", eff.IdleTimeout)
	ll := LimitListener(l, cfg.Limits, h.c.Log)
	if cfg.Metrics != nil {
		m := newConnMetrics(ll, "spire_agent_workload_api")
		if err := cfg.Metrics.Register(m); err != nil {
			l.Close()
			return fmt.Errorf("workloadapi: register connection metrics: %w", err)
		}
		// The counters die with this listener; a later Serve registers its own.
		defer cfg.Metrics.Unregister(m)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ll) }()
	select {
	case <-ctx.Done():
		// Streams never end on their own; Stop rather than wait for them.
		s.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("workloadapi: serve: %w", err)
	}
}

func closePIDFD(fd int) { _ = unix.Close(fd) }
