// Package endpoints serves the server API on its two listeners: TCP with
// TLS for agents (and SVID-holding admins), and the admin Unix socket for
// the local CLI, each with its own gRPC server. Who may call what is
// decided by the api package's interceptors; this package sets up
// transport security and bounds what the TCP listener holds: connection
// caps, handshake and idle timeouts (limits.go), so that callers that never
// authenticate cannot starve agents or the admin socket.
package endpoints

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe-hw/spire-hw/internal/unixsock"
	"github.com/spiffe-hw/spire-hw/server/api"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// MaxMessageSize bounds one request; larger ones fail with ResourceExhausted
// before any handler runs.
const MaxMessageSize = 4 << 20

// MaxConcurrentStreams bounds the calls in flight on one TCP connection;
// a client's further calls wait for one to end.
const MaxConcurrentStreams = 100

// Config describes the listeners.
type Config struct {
	// TCPAddr is host:port for agents ("127.0.0.1:8081").
	TCPAddr string
	// SocketPath is the admin Unix socket.
	SocketPath string
	API        *api.API
	// Certificate returns the server's current TLS certificate (its SVID).
	Certificate func() (*tls.Certificate, error)
	// Bundles verifies client SVIDs; it must reflect CA rotation.
	Bundles x509bundle.Source
	// TrustDomain and AdminIDs tell which verified connections keep no
	// idle timeout: agents' (paths under /spire/agent/ in TrustDomain) and
	// admin_ids' (see Limits.IdleTimeout).
	TrustDomain spiffeid.TrustDomain
	AdminIDs    []spiffeid.ID
	// Limits bound the TCP listener (zero fields: defaults). The admin
	// socket has none: only the server's user and group reach it.
	Limits Limits
	// Metrics, when set, counts every call (after authorization, so that
	// refused calls are counted with their code).
	Metrics *telemetry.RPC
	// Registry, when set, gets the TCP listener's connection metrics
	// (<MetricsPrefix>_tcp_connections and the refusal and close counts).
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// MetricsPrefix begins the TCP listener's metric names: the server's service
// name, telemetry.ServerService, as SPIRE's metrics begin.
const MetricsPrefix = "spire_server"

// Endpoints owns the listeners and their gRPC servers: one for TCP and one
// for the admin socket, so that a flood on the TCP side, however many
// connections and handshakes it holds, never takes a goroutine, a stream
// quota or a descriptor the admin socket needs.
type Endpoints struct {
	cfg    Config
	tcpSrv *grpc.Server
	admin  *grpc.Server
	health *health.Server
	tcp    net.Listener
	unix   net.Listener
	// unregister removes the connection metrics from cfg.Registry when
	// Serve ends, so that a later New may register its own there.
	unregister func()
}

// New binds both listeners, so that errors such as a port in use are
// reported at start-up, before Serve.
func New(cfg Config) (_ *Endpoints, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("endpoints: trust domain is not set")
	}
	tcp, err := net.Listen("tcp", cfg.TCPAddr)
	if err != nil {
		return nil, fmt.Errorf("endpoints: listen on %s: %w", cfg.TCPAddr, err)
	}
	unixL, err := ListenAdminSocket(cfg.SocketPath)
	if err != nil {
		tcp.Close()
		return nil, err
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cfg.Certificate()
		},
		// Agents present no certificate while attesting, so one is
		// requested, not required; a presented one must verify.
		ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, cfg.Bundles)
			return err
		},
	}
	lim := newLimiter(cfg.Limits, cfg.TrustDomain, cfg.AdminIDs, cfg.Log)
	unregister := func() {}
	if cfg.Registry != nil {
		collector := newLimitMetrics(lim, MetricsPrefix)
		if err := cfg.Registry.Register(collector); err != nil {
			tcp.Close()
			unixL.Close()
			return nil, fmt.Errorf("endpoints: register connection metrics: %w", err)
		}
		unregister = func() { cfg.Registry.Unregister(collector) }
	}
	// From here on, a failure must also give the registry back.
	defer func() {
		if err != nil {
			unregister()
			tcp.Close()
			unixL.Close()
		}
	}()
	e := &Endpoints{cfg: cfg, tcp: &listener{Listener: tcp, lim: lim}, unix: unixL, health: health.NewServer(), unregister: unregister}
	tracker := rpcTracker{lim: lim}
	// Both servers: metrics first, so that every call is counted with
	// its code, then authorization. The TCP server refuses, in between,
	// calls on a connection its idle timer is closing (rpcTracker).
	chains := func(onTCP bool) []grpc.ServerOption {
		var unary []grpc.UnaryServerInterceptor
		var stream []grpc.StreamServerInterceptor
		if cfg.Metrics != nil {
			unary, stream = append(unary, cfg.Metrics.Unary), append(stream, cfg.Metrics.Stream)
		}
		if onTCP {
			unary, stream = append(unary, tracker.unary), append(stream, tracker.stream)
		}
		unary, stream = append(unary, cfg.API.UnaryInterceptor), append(stream, cfg.API.StreamInterceptor)
		return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}
	}
	common := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		// Pings at most every 5 s, even between calls: an agent's client
		// may probe its idle connection; more frequent pings cost the
		// pinger its connection (gRPC's strike rule).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Every agent holds a connection, idle between syncs, and gRPC
		// gives each one a read buffer for its lifetime (32 KiB by
		// default; 8 KiB here was still 44 MiB of the live heap at 5,000
		// agents, a fifth of it). None: the framer reads from the TLS
		// connection, which already holds the decrypted record, so the
		// buffer only saved a copy.
		grpc.ReadBufferSize(0),
		// The entry sync sends entries in the encoding the entry cache
		// holds them in.
		api.ServerCodec(),
	}
	e.tcpSrv = grpc.NewServer(append(append(common, chains(true)...),
		grpc.Creds(limitedTLS{credentials.NewTLS(tlsCfg)}),
		// gRPC holds this deadline on the raw connection from accept
		// through the TLS handshake, the HTTP/2 preface and the first
		// SETTINGS frame (grpc.Server.handleRawConn).
		grpc.ConnectionTimeout(lim.cfg.HandshakeTimeout),
		grpc.StatsHandler(tracker),
		// Calls at once on one connection (HTTP/2's recommended floor;
		// gRPC's default is unbounded): an agent needs a handful, and
		// without a bound one connection, which the caps count once,
		// could hold any number of handler goroutines.
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		// No HPACK dynamic table for the headers agents send: each
		// connection's decoder kept one for its lifetime (about 3.9 KiB
		// of the live heap per agent at 10,000 agents), to spare the
		// hundred or so bytes an agent's few header values take on an
		// RPC every few seconds. Clients (gRPC's, SPIRE's agents
		// included) then send them as literals.
		grpc.HeaderTableSize(0),
	)...)
	// The admin socket: no transport security (file permissions are its
	// authentication; the api package sees a Unix peer and treats it as
	// local admin), the same services, interceptors and metrics; its
	// credentials only record who connected, for the audit log.
	e.admin = grpc.NewServer(append(append(common, grpc.Creds(localCreds{})), chains(false)...)...)
	for _, s := range []*grpc.Server{e.tcpSrv, e.admin} {
		cfg.API.Register(s)
		healthpb.RegisterHealthServer(s, e.health)
	}
	cfg.Log.Info("Connection limits", "max_connections", lim.cfg.MaxConnections, "max_connections_per_id", lim.cfg.MaxConnectionsPerID,
		"max_handshakes", lim.cfg.MaxHandshakes, "max_handshakes_per_source", lim.cfg.MaxHandshakesPerSource,
		"max_unauthenticated", lim.cfg.MaxUnauthenticated, "max_unauthenticated_per_source", lim.cfg.MaxUnauthenticatedPerSource,
		"handshake_timeout", lim.cfg.HandshakeTimeout, "unauthenticated_idle_timeout", lim.cfg.IdleTimeout)
	return e, nil
}

// TCPAddr is the bound agent address (useful with port 0).
func (e *Endpoints) TCPAddr() net.Addr { return e.tcp.Addr() }

// Serve serves until ctx ends, then stops gracefully (in-flight calls get a
// few seconds to finish). Once it returns, the connection metrics are gone
// from Config.Registry.
func (e *Endpoints) Serve(ctx context.Context) error {
	defer e.unregister()
	errs := make(chan error, 2)
	go func() { errs <- e.tcpSrv.Serve(e.tcp) }()
	go func() { errs <- e.admin.Serve(e.unix) }()
	e.cfg.Log.Info("Starting Server APIs", "address", e.tcp.Addr().String(), "socket", e.cfg.SocketPath)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	e.health.Shutdown()
	// Notice streams last as long as their agents; a graceful stop would
	// wait the full grace period for them.
	e.cfg.API.StopNotices()
	stopped := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, s := range []*grpc.Server{e.tcpSrv, e.admin} {
			wg.Go(s.GracefulStop)
		}
		wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		e.tcpSrv.Stop()
		e.admin.Stop()
	}
	// Stop has closed the listener, which removed the socket if it was
	// still ours; a second Close is a no-op.
	e.unix.Close()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// ListenAdminSocket creates the admin socket, mode 0770 (the server's user
// and group). A missing directory is created 0770; an existing one keeps
// its mode, sticky bit and owner. A stale socket left by a previous run is
// removed, a live one or anything that is not a socket is refused
// (internal/unixsock). Closing the listener removes the socket, only while
// it is still the one created here.
func ListenAdminSocket(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("endpoints: admin socket path is empty")
	}
	l, err := unixsock.Listen(path, 0o770, 0o770)
	if err != nil {
		return nil, fmt.Errorf("endpoints: admin socket (socket_path): %w", err)
	}
	return l, nil
}
