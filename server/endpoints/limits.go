package endpoints

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/connlimit"
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
// presents a verified SVID leaves both and counts only against
// MaxConnections, so that agents behind one NAT are not capped by their
// shared address once attested.
type Limits struct {
	// MaxConnections caps all TCP connections; 0 derives it from
	// RLIMIT_NOFILE (see DefaultMaxConnections).
	MaxConnections int
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
	// IdleTimeout closes an unauthenticated connection that has had no
	// call in flight for that long; an open AttestAgent stream keeps it.
	IdleTimeout time.Duration
}

// Defaults. Each unauthenticated connection past the handshake costs a
// descriptor and about 45 KiB (gRPC transport buffers and TLS state), so the
// unauthenticated caps bound a flood to about 90 MiB however many sources it
// comes from, and one source to 128 connections. Attested agents are capped
// only by MaxConnections: issue 18 targets 10,000 agents per server core.
const (
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
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		// Unreadable or unlimited (RLIM_INFINITY): the kernel's
		// nr_open ceiling is 2^20 by default.
		return maxConnectionsFor(1 << 20)
	}
	return maxConnectionsFor(int64(r.Cur))
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

	// refused counts refusals by pool ("all", "handshake",
	// "unauthenticated") and cap; timeouts and idle count closes.
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

func newLimiter(cfg Limits, log *slog.Logger) *limiter {
	cfg = cfg.withDefaults()
	return &limiter{
		cfg:        cfg,
		log:        log,
		refusals:   connlimit.NewRefusalLog(log, 0),
		all:        connlimit.NewSlots(cfg.MaxConnections, 0),
		handshakes: connlimit.NewSlots(cfg.MaxHandshakes, cfg.MaxHandshakesPerSource),
		unauth:     connlimit.NewSlots(cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerSource),
		conns:      make(map[connKey]*conn),
	}
}

// refuse logs a cap that bit, at most once per pool and source per
// interval, so that a flood does not become a log flood. A total cap is
// logged once per pool whatever the source: the line names the first.
func (l *limiter) refuse(pool, source string, reason connlimit.Reason, limit int) {
	n, _ := l.refused.LoadOrStore(refusalKey{pool, reason}, new(atomic.Uint64))
	n.(*atomic.Uint64).Add(1)
	key := pool + "/" + source
	if reason == connlimit.ReasonTotal {
		key = pool
	}
	l.refusals.Refused(key, "Refused connection", "pool", pool, "reason", string(reason), "source", source, "limit", limit)
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
		if refused != "" {
			raw.Close()
			l.lim.refuse("all", source, refused, l.lim.cfg.MaxConnections)
			continue
		}
		releaseHS, refused := l.lim.handshakes.Acquire(source)
		if refused != "" {
			raw.Close()
			releaseAll()
			limit := l.lim.cfg.MaxHandshakes
			if refused == connlimit.ReasonPerKey {
				limit = l.lim.cfg.MaxHandshakesPerSource
			}
			l.lim.refuse("handshake", source, refused, limit)
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
	idle          *time.Timer // set while unauthenticated
	active        int         // calls in flight
	closed        bool
	timedOut      bool
}

// errUnauthenticatedCap is returned from the handshake when the
// unauthenticated pool is full; gRPC then closes the connection.
var errUnauthenticatedCap = errors.New("endpoints: unauthenticated connection limit reached")

// handshakeDone moves the connection out of the handshake pool: into the
// unauthenticated pool, or, with a verified client certificate, into
// neither.
func (c *conn) handshakeDone(authenticated bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.releaseHS != nil {
		c.releaseHS()
		c.releaseHS = nil
	}
	if authenticated || c.closed {
		return nil
	}
	release, refused := c.lim.unauth.Acquire(c.source)
	if refused != "" {
		limit := c.lim.cfg.MaxUnauthenticated
		if refused == connlimit.ReasonPerKey {
			limit = c.lim.cfg.MaxUnauthenticatedPerSource
		}
		c.lim.refuse("unauthenticated", c.source, refused, limit)
		return fmt.Errorf("%w (%s)", errUnauthenticatedCap, refused)
	}
	c.releaseUnauth = release
	c.idle = time.AfterFunc(c.lim.cfg.IdleTimeout, c.idleExpired)
	return nil
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
	if c.active == 0 && c.idle != nil && !c.closed {
		c.idle.Reset(c.lim.cfg.IdleTimeout)
	}
}

func (c *conn) idleExpired() {
	c.mu.Lock()
	if c.active > 0 || c.closed {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.lim.idle.Add(1)
	c.lim.log.Debug("Closed idle unauthenticated connection", "source", c.source, "idle_timeout", c.lim.cfg.IdleTimeout)
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
	for _, release := range []func(){c.releaseHS, c.releaseUnauth, c.releaseAll} {
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
