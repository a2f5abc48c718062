package workloadapi

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Defaults of the Workload API's connection limits. The socket is open to
// every local user, so these are what stands between one user opening
// connections it never uses and the agent running out of descriptors.
const (
	// DefaultMaxConnectionsPerUID is the connections one uid may hold. A
	// process needs one per go-spiffe Client or X509Source/JWTSource (gRPC
	// multiplexes its streams), so 256 is room for a hundred or more
	// processes of one user at once, while a flood from that user is held
	// to 512 descriptors and a few MiB.
	DefaultMaxConnectionsPerUID = 256
	// DefaultHandshakeTimeout bounds the time from accept to the end of
	// the HTTP/2 preface. On a local socket that takes microseconds; a
	// connection silent that long was opened to be held.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a connection that has had no RPC open for
	// this long. A client reconnects on its next call for the cost of a
	// local connect, so idle slots need not be held for long.
	DefaultIdleTimeout = 2 * time.Minute

	// maxDefaultTotal caps the derived total: an idle connection costs
	// the agent about 20 KiB of memory besides its two descriptors
	// (bench/RESULTS-flood-agent.md), so the derived cap keeps a full
	// socket under ~200 MiB however high RLIMIT_NOFILE is.
	maxDefaultTotal = 8192
	// minDefaultTotal keeps the socket usable under a tiny RLIMIT_NOFILE.
	minDefaultTotal = 64
)

// Limits bound what callers of the Workload API socket may hold. The zero
// value means the defaults; a negative count means no cap.
type Limits struct {
	// MaxConnections caps the connections open at once, all callers
	// together (0: DefaultMaxConnections).
	MaxConnections int
	// MaxConnectionsPerUID caps the connections one uid (SO_PEERCRED at
	// accept) may hold (0: DefaultMaxConnectionsPerUID, or half of the
	// total cap when that is smaller, so one user can never take it all).
	MaxConnectionsPerUID int
	// HandshakeTimeout bounds accept to HTTP/2 preface (0: default).
	HandshakeTimeout time.Duration
	// IdleTimeout closes connections with no open RPC (0: default). A
	// connection holding a stream (FetchX509SVID) is never idle.
	IdleTimeout time.Duration
}

// DefaultMaxConnections derives the total cap from RLIMIT_NOFILE. Each
// connection costs two descriptors (the socket and the caller's pidfd),
// and half of the table is kept for the agent's own: its connection to the
// server, bbolt, external plugins and their pipes, eBPF maps and links,
// the admin socket. So the cap is a quarter of the limit, clamped to
// [64, 8192].
func DefaultMaxConnections() int {
	return int(min(max(connlimit.OpenFiles()/4, minDefaultTotal), maxDefaultTotal))
}

// Effective returns l with its defaults filled in; a cap of 0 in the
// result means none.
func (l Limits) Effective() Limits {
	switch {
	case l.MaxConnections == 0:
		l.MaxConnections = DefaultMaxConnections()
	case l.MaxConnections < 0:
		l.MaxConnections = 0
	}
	switch {
	case l.MaxConnectionsPerUID == 0:
		l.MaxConnectionsPerUID = DefaultMaxConnectionsPerUID
		if l.MaxConnections > 0 {
			l.MaxConnectionsPerUID = min(l.MaxConnectionsPerUID, max(l.MaxConnections/2, 1))
		}
	case l.MaxConnectionsPerUID < 0:
		l.MaxConnectionsPerUID = 0
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// LimitListener caps l's connections in total and per caller uid, as lim
// says (defaults filled in). Connections over a cap are closed at accept
// and logged at WARN with the uid and the cap, at most once per uid every
// 10 s.
func LimitListener(l net.Listener, lim Limits, log *slog.Logger) *connlimit.Listener {
	lim = lim.Effective()
	return connlimit.Wrap(l, connlimit.Config{
		Name:    "Workload API",
		Total:   lim.MaxConnections,
		PerKey:  lim.MaxConnectionsPerUID,
		Key:     peerUID,
		KeyName: "uid",
		Log:     log,
	})
}

// ServerOptions are the gRPC options that enforce lim's timeouts, plus a
// smaller per-connection read buffer.
func ServerOptions(lim Limits) []grpc.ServerOption {
	lim = lim.Effective()
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(lim.HandshakeTimeout),
		// MaxConnectionIdle counts from the last RPC's end (or the
		// connection's start): an open stream keeps it alive. gRPC
		// sends GOAWAY, so a client reconnects on its next call.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: lim.IdleTimeout}),
		// Workload API requests are a few bytes, yet gRPC gives every
		// connection a 32 KiB read buffer for its life; reads larger than
		// the buffer bypass it, so a small one costs no copies. (gRPC
		// already takes write buffers from a pool only while writing.)
		grpc.ReadBufferSize(8 << 10),
		// The connection caps bound connections, not the streams within
		// one: without this, one connection could open streams (each a
		// cache subscription) until memory ran out.
		grpc.MaxConcurrentStreams(MaxStreamsPerConnection),
	}
}

// MaxStreamsPerConnection caps the RPCs open at once on one connection. A
// go-spiffe client holds two or three streams (X.509 and JWT bundle
// watches), an Envoy one SDS stream per secret it watches; beyond this,
// gRPC makes the client queue new streams until one ends.
const MaxStreamsPerConnection = 128

// peerUID is the uid of the process that connected, as the kernel
// recorded it at connect (SO_PEERCRED).
func peerUID(c net.Conn) (string, error) {
	cred, err := peer.Ucred(c)
	if err != nil {
		return "", fmt.Errorf("workloadapi: peer uid: %w", err)
	}
	return strconv.FormatUint(uint64(cred.Uid), 10), nil
}
