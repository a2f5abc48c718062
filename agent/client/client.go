// Package client is the agent's one connection to the SPIRE-compatible
// server: node attestation over a bootstrap TLS connection, then mutual TLS
// with the agent's X509-SVID for renewal, entry sync, SVID minting and
// bundles. The SVID and bundle behind the mTLS connection can be swapped at
// run time (after renewal or a bundle rotation) without rebuilding the
// client.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// DefaultCallTimeout bounds every RPC (a whole stream counts as one call),
// except the notice stream, which lasts as long as the connection.
const DefaultCallTimeout = 30 * time.Second

// Client keepalive on the mTLS connection (see agentConnCtx).
const (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// Config configures a Client.
type Config struct {
	// ServerAddress is the server's host:port. A name that resolves to
	// several addresses (servers sharing one database) is balanced round
	// robin, and a server that dies is failed over (see dial.go).
	ServerAddress string
	// TrustDomain is the agent's and server's trust domain; the server must
	// present spiffe://<TrustDomain>/spire/server.
	TrustDomain spiffeid.TrustDomain
	// TrustBundle verifies the server during the first attestation.
	TrustBundle []*x509.Certificate
	// InsecureBootstrap skips server verification during the first
	// attestation only; everything after uses the bundle the server
	// returned. Unsafe outside of tests and trusted networks.
	InsecureBootstrap bool
	// CallTimeout bounds each RPC; zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// Log receives connection events; nil discards them.
	Log *slog.Logger
}

// Client talks to the server. It is safe for concurrent use.
type Client struct {
	cfg      Config
	serverID spiffeid.ID
	log      *slog.Logger

	svid   atomic.Pointer[x509svid.SVID]
	bundle atomic.Pointer[x509bundle.Bundle]

	// dialOpts are added to every dial; tests set a resolver of their
	// own here.
	dialOpts []grpc.DialOption

	mu   sync.Mutex
	conn *grpc.ClientConn
	// conns logs the connections of conn to the server's addresses.
	conns *serverConns
	// connCtx ends when conn is retired or closed, and with it the
	// notice stream on conn (see WatchChanges).
	connCtx    context.Context
	connCancel context.CancelFunc
	closed     bool
}

// ServerID returns the SPIFFE ID every SPIRE server of td presents.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "spire", "server") // constant, valid segments
	return id
}

// New returns a Client. It does not connect until the first call.
func New(cfg Config) (*Client, error) {
	if cfg.ServerAddress == "" {
		return nil, errors.New("client: server address is required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("client: trust domain is required")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, serverID: ServerID(cfg.TrustDomain), log: log}, nil
}

// SetSVID makes svid the agent's client certificate. Connections opened
// with the old SVID are retired: the server enables a renewed SVID on its
// first use and then refuses the old one.
func (c *Client) SetSVID(svid *x509svid.SVID) {
	old := c.svid.Swap(svid)
	if old != nil && old != svid {
		c.retireConn()
	}
}

// SetBundle sets the trust domain's X.509 authorities used to verify the
// server once the agent is attested. Handshakes read it afresh, so a
// rotated bundle takes effect on the next connection.
func (c *Client) SetBundle(bundle *x509bundle.Bundle) { c.bundle.Store(bundle) }

// Close closes the connection; the Client cannot be used afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn == nil {
		return nil
	}
	c.connCancel()
	c.conns.retired.Store(true)
	err := c.conn.Close()
	c.conn = nil
	return err
}

// retireConn drops the current connection so that the next call dials a new
// one. The old one is closed after a call timeout so that RPCs already on it
// can finish.
func (c *Client) retireConn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return
	}
	old := c.conn
	c.conn = nil
	c.conns.retired.Store(true)
	// The notice stream moves to the next connection now; calls in
	// flight get a call timeout.
	c.connCancel()
	time.AfterFunc(c.cfg.CallTimeout, func() { _ = old.Close() })
}

// agentConn returns the mTLS connection, dialing it if needed. gRPC
// reconnects a failed connection by itself; TLS parameters are read from
// the swappable SVID and bundle at each handshake.
func (c *Client) agentConn() (*grpc.ClientConn, error) {
	conn, _, err := c.agentConnCtx()
	return conn, err
}

// agentConnCtx is agentConn with the context that ends when the
// connection is retired.
func (c *Client) agentConnCtx() (*grpc.ClientConn, context.Context, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, errors.New("client: closed")
	}
	if c.conn != nil {
		return c.conn, c.connCtx, nil
	}
	if c.svid.Load() == nil || c.bundle.Load() == nil {
		return nil, nil, errors.New("client: not attested: no agent SVID or bundle")
	}
	tlsCfg := tlsconfig.MTLSClientConfig(svidSource{c}, bundleSource{c}, tlsconfig.AuthorizeID(c.serverID))
	conns := newServerConns(c.log)
	conn, err := grpc.NewClient(target(c.cfg.ServerAddress), c.dialOptions(credentials.NewTLS(tlsCfg),
		grpc.WithStatsHandler(conns),
		// Only while a call is open, which the notice stream always is:
		// a server that vanished without closing the connection is
		// noticed within Time+Timeout, not at the next poll's timeout.
		// The server permits a ping every 5 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}))...)
	if err != nil {
		return nil, nil, fmt.Errorf("client: dial %s: %w", c.cfg.ServerAddress, err)
	}
	c.conn, c.conns = conn, conns
	c.connCtx, c.connCancel = context.WithCancel(context.Background())
	return conn, c.connCtx, nil
}

// svidSource and bundleSource let go-spiffe's TLS config read the current
// SVID and bundle at every handshake.
type svidSource struct{ c *Client }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	svid := s.c.svid.Load()
	if svid == nil {
		return nil, errors.New("client: no agent SVID")
	}
	return svid, nil
}

type bundleSource struct{ c *Client }

func (s bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b := s.c.bundle.Load()
	if b == nil || b.TrustDomain() != td {
		return nil, fmt.Errorf("client: no bundle for trust domain %q", td)
	}
	return b, nil
}

// bootstrapTLS returns the TLS config for attestation. Re-attestation of an
// agent that already holds a bundle verifies the server with it (the agent
// is identified by its evidence, not by a possibly expired SVID); the first
// attestation uses the configured trust bundle,
// or, with insecure bootstrap, records the server's chain unverified so that
// it can be checked against the bundle the server returns.
func (c *Client) bootstrapTLS(peer *peerChain) *tls.Config {
	if b := c.bundle.Load(); b != nil {
		return tlsconfig.TLSClientConfig(b, tlsconfig.AuthorizeID(c.serverID))
	}
	if !c.cfg.InsecureBootstrap {
		// An empty bundle makes every handshake fail, which is the right
		// answer for an agent that has nothing to trust.
		b := x509bundle.FromX509Authorities(c.cfg.TrustDomain, c.cfg.TrustBundle)
		return tlsconfig.TLSClientConfig(b, tlsconfig.AuthorizeID(c.serverID))
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // insecure_bootstrap was asked for; the chain is checked after attestation
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			peer.set(raw)
			return nil
		},
	}
}
