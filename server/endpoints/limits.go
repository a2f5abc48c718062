package endpoints

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits bound what the agent (TCP) listener holds, so that callers that
// never authenticate cannot take the descriptors and memory the server needs
// for its agents, its database, its plugins and the admin socket. A zero
// field takes its default.
//
// A connection goes through two unauthenticated pools, each capped in total
// and per source IP: the handshake pool from accept until the TLS handshake
// ends (at most HandshakeTimeout), then, if it presented no client
// certificate, the unauthenticated pool until it closes. A connection that
// presents a verified X.509-SVID leaves both and counts in the verified
// pool instead, capped per SPIFFE ID and not per source, so that agents
// behind one NAT are not capped by their shared address once attested,
// while one stolen or minted SVID cannot fill MaxConnections.
//
// The fields are those of server/config.ConnectionLimits, in the same
// order, so that the server converts one into the other.
type Limits struct {
	// MaxConnections caps all TCP connections; 0 derives it from
	// RLIMIT_NOFILE (see DefaultMaxConnections).
	MaxConnections int
	// MaxConnectionsPerID caps the connections that presented a verified
	// X.509-SVID, per SPIFFE ID.
	MaxConnectionsPerID int
	// MaxHandshakes and MaxHandshakesPerSource cap connections still in
	// the TLS handshake.
	MaxHandshakes, MaxHandshakesPerSource int
	// MaxUnauthenticated and MaxUnauthenticatedPerSource cap connections
	// past the handshake without a client certificate (attesting agents,
	// GetBundle callers).
	MaxUnauthenticated, MaxUnauthenticatedPerSource int
	// HandshakeTimeout bounds the TLS handshake and the HTTP/2 preface
	// together (grpc.ConnectionTimeout).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that has had no call in flight for
	// that long, unless it presented the SVID of an agent (a path under
	// /spire/agent/ in the trust domain) or of an admin_ids entry: agents
	// keep one connection for their syncs, and admins are trusted; any
	// other verified SVID is a workload's or a tool's, which reconnects on
	// its next call. An open AttestAgent stream keeps a connection.
	IdleTimeout time.Duration
}

// Defaults. Each unauthenticated connection past the handshake costs a
// descriptor and about 45 KiB (gRPC transport buffers and TLS state), so the
// unauthenticated caps bound a flood to about 90 MiB however many sources it
// comes from, and one source to 128 connections. Verified connections are
// capped per SPIFFE ID and by MaxConnections: issue 18 targets 10,000 agents
// per server core.
const (
	// DefaultMaxConnectionsPerID: an agent holds one connection, and a
	// second for a moment while it rotates its SVID or re-attests; one
	// that crashes and restarts leaves its old connections open until TCP
	// keepalive notices (minutes), and a script may run a few CLI calls
	// at once with one admin SVID. 32 leaves room for all of that, while
	// one compromised workload, or a banned agent's still-valid SVID, holds
	// at most 32 descriptors (about 1.4 MiB), not the whole pool.
	DefaultMaxConnectionsPerID         = 32
	DefaultMaxHandshakes               = 1024
	DefaultMaxHandshakesPerSource      = 256
	DefaultMaxUnauthenticated          = 2048
	DefaultMaxUnauthenticatedPerSource = 128
	DefaultHandshakeTimeout            = 10 * time.Second
	DefaultIdleTimeout                 = 10 * time.Second
	// minReservedFiles is kept free of TCP connections for the database,
	// plugins, log files, the metrics listener and the admin socket.
	minReservedFiles = 256
)

// DefaultMaxConnections is the TCP connection cap when none is set: the
// soft RLIMIT_NOFILE (which the Go runtime raises to the hard limit at
// start) less a reserve of a tenth of it, at least 256 descriptors.
func DefaultMaxConnections() int {
	return maxConnectionsFor(connlimit.OpenFiles())
}

func maxConnectionsFor(nofile int64) int {
	reserve := max(nofile/10, minReservedFiles)
	// A tiny limit still serves a few agents; it cannot keep the reserve
	// anyway.
	return int(max(nofile-reserve, 16))
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections()
	}
	def(&l.MaxConnectionsPerID, DefaultMaxConnectionsPerID)
	def(&l.MaxHandshakes, DefaultMaxHandshakes)
	def(&l.MaxHandshakesPerSource, DefaultMaxHandshakesPerSource)
	def(&l.MaxUnauthenticated, DefaultMaxUnauthenticated)
	def(&l.MaxUnauthenticatedPerSource, DefaultMaxUnauthenticatedPerSource)
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// limiter holds the counters of one TCP listener and the connections it
// accepted, so that the stats handler can find a connection by address.
type limiter struct {
	cfg        Limits
	log        *slog.Logger
	refusals   *connlimit.RefusalLog
	all        *connlimit.Slots
	handshakes *connlimit.Slots
	unauth     *connlimit.Slots
	verified   *connlimit.Slots // per SPIFFE ID, no total of its own

	// td and adminIDs tell which verified connections keep no idle
	// timeout (see Limits.IdleTimeout).
	td       spiffeid.TrustDomain
	adminIDs []spiffeid.ID

	// refused counts refusals by pool ("all", "handshake",
	// "unauthenticated", "verified") and cap; timeouts and idle count
	// closes.
	refused        sync.Map // refusalKey -> *atomic.Uint64
	timeouts, idle atomic.Uint64

	mu    sync.Mutex
	conns map[connKey]*conn
}

type refusalKey struct {
	pool   string
	reason connlimit.Reason
}

// connKey names a TCP connection: on one listener, the remote and local
// addresses together are unique among open connections.
type connKey struct{ remote, local string }

func newLimiter(cfg Limits, td spiffeid.TrustDomain, adminIDs []spiffeid.ID, log *slog.Logger) *limiter {
	cfg = cfg.withDefaults()
	return &limiter{
		cfg:        cfg,
		log:        log,
		refusals:   connlimit.NewRefusalLog(log, 0),
		all:        connlimit.NewSlots(cfg.MaxConnections, 0),
		handshakes: connlimit.NewSlots(cfg.MaxHandshakes, cfg.MaxHandshakesPerSource),
		unauth:     connlimit.NewSlots(cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerSource),
		verified:   connlimit.NewSlots(0, cfg.MaxConnectionsPerID),
		td:         td,
		adminIDs:   slices.Clone(adminIDs),
		conns:      make(map[connKey]*conn),
	}
}

// refuse logs a cap that bit, at most once per pool and key (the source,
// or for the verified pool the SPIFFE ID) per interval, so that a flood
// does not become a log flood. A total cap is logged once per pool
// whatever the source: the line names the first.
func (l *limiter) refuse(pool, key string, reason connlimit.Reason, limit int, args ...any) {
	// Load first: a flood refuses on this path, and LoadOrStore would
	// allocate a counter for every refusal only to drop it.
	n, ok := l.refused.Load(refusalKey{pool, reason})
	if !ok {
		n, _ = l.refused.LoadOrStore(refusalKey{pool, reason}, new(atomic.Uint64))
	}
	n.(*atomic.Uint64).Add(1)
	logKey := pool + "/" + key
	if reason == connlimit.ReasonTotal {
		logKey = pool
	}
	l.refusals.Refused(logKey, "Refused connection", append([]any{"pool", pool, "reason", string(reason), "limit", limit}, args...)...)
}

// keepsIdle reports whether a verified connection is exempt from the idle
// timeout: an agent's (it holds the connection its syncs use) or an
// admin_ids entry's. Every other SVID is a workload's or a tool's.
func (l *limiter) keepsIdle(id spiffeid.ID) bool {
	if id.MemberOf(l.td) && strings.HasPrefix(id.Path(), "/spire/agent/") {
		return true
	}
	return slices.Contains(l.adminIDs, id)
}

func (l *limiter) lookup(remote, local net.Addr) *conn {
	if remote == nil || local == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[connKey{remote.String(), local.String()}]
}

// listener applies the limiter at accept.
type listener struct {
	net.Listener
	lim *limiter
}

// Accept returns the next connection within the total and handshake caps;
// others are closed and logged, and Accept goes on waiting.
func (l *listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		source := sourceIP(raw.RemoteAddr())
		releaseAll, refused := l.lim.all.Acquire("")
		// Refusals are logged before the close, so that the line is
		// written by the time the caller sees its connection end.
		if refused != "" {
			l.lim.refuse("all", source, refused, l.lim.cfg.MaxConnections, "source", source)
			raw.Close()
			continue
		}
		releaseHS, refused := l.lim.handshakes.Acquire(source)
		if refused != "" {
			limit := l.lim.cfg.MaxHandshakes
			if refused == connlimit.ReasonPerKey {
				limit = l.lim.cfg.MaxHandshakesPerSource
			}
			l.lim.refuse("handshake", source, refused, limit, "source", source)
			raw.Close()
			releaseAll()
			continue
		}
		c := &conn{
			Conn:       raw,
			lim:        l.lim,
			source:     source,
			key:        connKey{raw.RemoteAddr().String(), raw.LocalAddr().String()},
			releaseAll: releaseAll,
			releaseHS:  releaseHS,
		}
		l.lim.mu.Lock()
		l.lim.conns[c.key] = c
		l.lim.mu.Unlock()
		return c, nil
	}
}

// sourceIP is the key a connection counts against per source: its IPv4
// address, or its IPv6 /64, since one host is routinely given a whole /64
// and could otherwise open each connection from a new address.
func sourceIP(a net.Addr) string {
	var ip net.IP
	if t, ok := a.(*net.TCPAddr); ok {
		ip = t.IP
	} else if host, _, err := net.SplitHostPort(a.String()); err == nil {
		ip = net.ParseIP(host)
	}
	switch {
	case ip == nil:
		return a.String()
	case ip.To4() != nil:
		return ip.To4().String()
	default:
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
}

// conn is an accepted TCP connection and the slots it holds.
type conn struct {
	net.Conn
	lim        *limiter
	source     string
	key        connKey
	releaseAll func()

	mu            sync.Mutex
	releaseHS     func()
	releaseUnauth func()
	releaseID     func()
	id            spiffeid.ID // the verified SVID's; zero without one
	idle          *time.Timer // set unless keepsIdle
	idleSince     time.Time   // when the last call ended
	active        int         // calls in flight
	// closing is set, under mu, when the idle timer decides to close:
	// from then on no call is admitted, so that a call cannot begin
	// between the decision and the close and then be cut.
	closing  bool
	closed   bool
	timedOut bool
}

// errUnauthenticatedCap and errIDCap are returned from the handshake when
// the connection's pool is full; gRPC then closes the connection.
var (
	errUnauthenticatedCap = errors.New("endpoints: unauthenticated connection limit reached")
	errIDCap              = errors.New("endpoints: per-SPIFFE-ID connection limit reached")
)

// handshakeDone moves the connection out of the handshake pool: into the
// unauthenticated pool without a client certificate (id is zero), or into
// the verified pool under id.
func (c *conn) handshakeDone(id spiffeid.ID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.releaseHS != nil {
		c.releaseHS()
		c.releaseHS = nil
	}
	if c.closed {
		return nil
	}
	if !id.IsZero() {
		release, refused := c.lim.verified.Acquire(id.String())
		if refused != "" {
			c.lim.refuse("verified", id.String(), refused, c.lim.cfg.MaxConnectionsPerID, "source", c.source, "spiffe_id", id.String())
			return fmt.Errorf("%w (%s)", errIDCap, id)
		}
		c.releaseID, c.id = release, id
		if !c.lim.keepsIdle(id) {
			c.startIdle()
		}
		return nil
	}
	release, refused := c.lim.unauth.Acquire(c.source)
	if refused != "" {
		limit := c.lim.cfg.MaxUnauthenticated
		if refused == connlimit.ReasonPerKey {
			limit = c.lim.cfg.MaxUnauthenticatedPerSource
		}
		c.lim.refuse("unauthenticated", c.source, refused, limit, "source", c.source)
		return fmt.Errorf("%w (%s)", errUnauthenticatedCap, refused)
	}
	c.releaseUnauth = release
	c.startIdle()
	return nil
}

// startIdle arms the idle timer; c.mu is held.
func (c *conn) startIdle() {
	c.idleSince = time.Now()
	c.idle = time.AfterFunc(c.lim.cfg.IdleTimeout, c.idleExpired)
}

func (c *conn) rpcBegin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active++
	if c.idle != nil {
		c.idle.Stop()
	}
}

func (c *conn) rpcEnd() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active--
	if c.active == 0 && c.idle != nil && !c.closing && !c.closed {
		c.idleSince = time.Now()
		c.idle.Reset(c.lim.cfg.IdleTimeout)
	}
}

// admit reports whether a call that has begun (rpcBegin) may run: not once
// the idle timer has decided to close the connection. rpcBegin precedes
// admit, and the timer decides only with no call begun, under the same
// lock, so a call either keeps the connection open or is refused before
// its handler runs; it is never cut half-way.
func (c *conn) admit() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closing
}

func (c *conn) idleExpired() {
	c.mu.Lock()
	if c.active > 0 || c.closing || c.closed {
		c.mu.Unlock()
		return
	}
	// A run that waited for the lock while a call began and ended, which
	// re-armed the timer, is stale: rpcBegin's Stop came too late for it.
	if left := c.lim.cfg.IdleTimeout - time.Since(c.idleSince); left > 0 {
		c.idle.Reset(left)
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.mu.Unlock()
	c.lim.idle.Add(1)
	args := []any{"source", c.source, "idle_timeout", c.lim.cfg.IdleTimeout}
	if !c.id.IsZero() {
		args = append(args, "spiffe_id", c.id.String())
	}
	c.lim.log.Debug("Closed idle connection", args...)
	c.Close()
}

// Read notes a deadline that expires: gRPC sets one only from accept to
// the end of the HTTP/2 preface, so it means a handshake timed out.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.mu.Lock()
		first := !c.timedOut
		c.timedOut = true
		c.mu.Unlock()
		if first {
			c.lim.timeouts.Add(1)
			c.lim.refusals.Refused("timeout/"+c.source, "Closed connection: TLS handshake or HTTP/2 preface timed out",
				"source", c.source, "handshake_timeout", c.lim.cfg.HandshakeTimeout)
		}
	}
	return n, err
}

// Close closes the connection and frees its slots; it may be called more
// than once (gRPC and the idle timer both close).
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return err
	}
	c.closed = true
	if c.idle != nil {
		c.idle.Stop()
	}
	for _, release := range []func(){c.releaseHS, c.releaseUnauth, c.releaseID, c.releaseAll} {
		if release != nil {
			release()
		}
	}
	c.lim.mu.Lock()
	if c.lim.conns[c.key] == c {
		delete(c.lim.conns, c.key)
	}
	c.lim.mu.Unlock()
	return err
}
