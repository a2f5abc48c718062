package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/admin/delegatedidentity"
	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"github.com/spiffe-hw/spire-hw/internal/unixsock"
	"github.com/spiffe-hw/spire-hw/logging"
)

// Defaults of the admin socket's connection caps. Only the agent's user
// and group reach the socket, and its callers are few: the CLI, which
// holds one connection per command, and (with the Delegated Identity API)
// a delegate or two holding a stream each. So the caps are far below the
// Workload API's; the timeouts are the Workload API's defaults.
const (
	DefaultMaxConnections       = 64
	DefaultMaxConnectionsPerUID = 16
)

// Config is what the admin socket serves from.
type Config struct {
	// SocketPath is admin_socket_path.
	SocketPath string
	// Limits are the connection caps and timeouts; zero fields take
	// DefaultMaxConnections, DefaultMaxConnectionsPerUID and the Workload
	// API's default timeouts, a negative cap means none.
	Limits workloadapi.Limits
	// TrustDomain verifies the agent SVID chain that GetInfo reports.
	TrustDomain spiffeid.TrustDomain
	// Manager answers GetInfo.
	Manager Manager
	// Uptime is how long the agent has run.
	Uptime func() time.Duration
	// LogLevel is the agent's live log level, which logger/v1 reads and
	// changes; nil makes logger/v1 answer FailedPrecondition.
	LogLevel *logging.Level
	// Log gets the socket's lines, each service's under its subsystem.
	Log *slog.Logger
	// Clock is GetInfo's time (nil: time.Now).
	Clock func() time.Time
	// DelegatedIdentity, if set, serves SPIRE's Delegated Identity API
	// from it; its Log, if nil, is Log's delegated_identity_api subsystem.
	DelegatedIdentity *delegatedidentity.Config
}

// effectiveLimits fills in the admin socket's defaults, then the
// Workload API's for what is left.
func (c *Config) effectiveLimits() workloadapi.Limits {
	lim := c.Limits
	if lim.MaxConnections == 0 {
		lim.MaxConnections = DefaultMaxConnections
	}
	if lim.MaxConnectionsPerUID == 0 {
		lim.MaxConnectionsPerUID = DefaultMaxConnectionsPerUID
	}
	return lim.Effective()
}

// Listen creates the admin socket, mode 0770 like SPIRE's. A missing
// directory is created 0770, as the server's admin socket directory; an
// existing one keeps its mode and owner. A stale socket is removed, a live
// one or anything that is not a socket is refused (internal/unixsock).
// Closing the listener removes the socket.
func Listen(socketPath string) (net.Listener, error) {
	l, err := unixsock.Listen(socketPath, 0o770, 0o770)
	if err != nil {
		return nil, fmt.Errorf("admin: admin_socket_path: %w", err)
	}
	return l, nil
}

// NewServer returns the admin gRPC server: callers identified by pidfd,
// every call logged at DEBUG with its caller, the timeouts of cfg.Limits,
// and opts (telemetry interceptors, for instance) after those.
func NewServer(cfg Config, opts ...grpc.ServerOption) (*grpc.Server, error) {
	log := cfg.log()
	creds, err := peer.NewCredentials(log)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	calls := callLog{log: log}
	all := append([]grpc.ServerOption{grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(calls.unary), grpc.ChainStreamInterceptor(calls.stream)},
		workloadapi.ServerOptions(cfg.effectiveLimits())...)
	s := grpc.NewServer(append(all, opts...)...)
	register(s, cfg)
	return s, nil
}

// register adds the admin services to s: debug/v1, logger/v1 and, when
// configured, the Delegated Identity API, which identifies its callers by
// the pidfd these credentials take.
func register(s grpc.ServiceRegistrar, cfg Config) {
	registerDebug(s, newDebugService(cfg))
	registerLogger(s, newLoggerService(cfg))
	if di := cfg.DelegatedIdentity; di != nil {
		c := *di
		if c.Log == nil {
			c.Log = cfg.log().With("subsystem", "delegated_identity_api")
		}
		delegatedidentity.Register(s, delegatedidentity.New(c))
	}
}

func (c *Config) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// Serve listens on cfg.SocketPath and serves the admin APIs until ctx is
// done, within cfg.Limits.
func Serve(ctx context.Context, cfg Config, opts ...grpc.ServerOption) error {
	log := cfg.log()
	l, err := Listen(cfg.SocketPath)
	if err != nil {
		return err
	}
	s, err := NewServer(cfg, opts...)
	if err != nil {
		l.Close()
		return err
	}
	lim := cfg.effectiveLimits()
	ll := connlimit.Wrap(l, connlimit.Config{
		Name: "admin API", Total: lim.MaxConnections, PerKey: lim.MaxConnectionsPerUID,
		Key: peerUID, KeyName: "uid", Log: log,
	})
	log = log.With("network", "unix", "address", cfg.SocketPath)
	log.Info("Starting Admin APIs", "max_connections", lim.MaxConnections,
		"max_connections_per_uid", lim.MaxConnectionsPerUID,
		"handshake_timeout", lim.HandshakeTimeout, "idle_timeout", lim.IdleTimeout)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ll) }()
	select {
	case <-ctx.Done():
		log.Info("Stopping Admin APIs")
		// A Delegated Identity stream never ends on its own; do not wait
		// for one.
		s.Stop()
		<-errc
		log.Info("Admin APIs have stopped")
		return nil
	case err := <-errc:
		log.Error("Admin APIs stopped prematurely", "error", err)
		return fmt.Errorf("admin: serve: %w", err)
	}
}

// peerUID keys a connection by the uid that connected (SO_PEERCRED).
func peerUID(c net.Conn) (string, error) {
	cred, err := peer.Ucred(c)
	if err != nil {
		return "", fmt.Errorf("admin: peer uid: %w", err)
	}
	return strconv.FormatUint(uint64(cred.Uid), 10), nil
}

// callLog writes one DEBUG line per admin call with who made it, for an
// operator reconstructing an incident with `logger set -level debug`.
type callLog struct{ log *slog.Logger }

func (c callLog) done(ctx context.Context, method string, start time.Time, err error) {
	if !c.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	args := []any{"method", method, "status", status.Code(err).String(), "elapsed", time.Since(start)}
	if p, ok := peer.FromContext(ctx); ok {
		args = append(args, "caller_uid", p.UID, "caller_gid", p.GID, "caller_pid", p.PID)
	}
	if err != nil {
		args = append(args, "error", err)
	}
	c.log.DebugContext(ctx, "Admin API call", args...)
}

func (c callLog) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	c.done(ctx, info.FullMethod, start, err)
	return resp, err
}

func (c callLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	c.done(ss.Context(), info.FullMethod, start, err)
	return err
}

// errNoSVID is GetInfo's cause before the agent has attested.
var errNoSVID = errors.New("the agent has no SVID yet")
