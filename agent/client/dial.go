package client

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
)

// Several servers sharing one database are reached through one
// server_address whose name resolves to all of them, as with SPIRE's
// agent: gRPC's DNS resolver hands every address to the round_robin
// balancer, which keeps a connection to each and spreads the calls over
// those that are up. When a server dies its connection fails and the
// next call goes to another; the agent's SVID is good on every server
// (one bundle, one node record), so nothing is attested again. A call
// that was on the dead server fails, and the manager's next round comes
// after its jittered backoff (0.5-1 s after the first failure), so a fleet
// does not move to the survivors in one instant. A server that comes back
// is reconnected by gRPC's own jittered backoff, and the name is resolved
// again when a connection fails (at most every 30 s), so that a changed
// record takes effect.
//
// A call a server answers Unavailable (its database is away and it has no
// copy of what the call needs, say a node it never read) is retried by
// gRPC, and round robin sends the retry to the next server. Only calls
// that a repeat cannot harm are retried: bundle reads, entry syncs and
// SVID signing; never attestation or renewal, where a repeat after a
// lost answer could replace an SVID the agent was already sent.
const roundRobinServiceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [
      {"service": "spire.api.server.bundle.v1.Bundle"},
      {"service": "spire.api.server.entry.v1.Entry", "method": "SyncAuthorizedEntries"},
      {"service": "spire.api.server.entry.v1.Entry", "method": "GetAuthorizedEntries"},
      {"service": "spire.api.server.svid.v1.SVID", "method": "BatchNewX509SVID"},
      {"service": "spire.api.server.svid.v1.SVID", "method": "NewJWTSVID"}
    ],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// target makes a host:port a gRPC target of the DNS resolver; a target
// with a scheme of its own (unix:, dns://, a test's resolver) is kept.
func target(addr string) string {
	if strings.Contains(addr, "://") || strings.HasPrefix(addr, "unix:") {
		return addr
	}
	return "dns:///" + addr
}

// dialOptions returns the options of every connection to the server:
// round robin over the name's addresses, and the service config of DNS
// TXT records ignored (SPIRE ignores it too).
func (c *Client) dialOptions(creds credentials.TransportCredentials, extra ...grpc.DialOption) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(roundRobinServiceConfig),
		grpc.WithDisableServiceConfig(),
	}
	opts = append(opts, c.dialOpts...)
	return append(opts, extra...)
}

// serverConns logs the connections of one grpc.ClientConn to the
// server's addresses, so that a failover shows in the agent's log: which
// server was lost and how many are still connected. It is a gRPC stats
// handler that looks at connection events only.
type serverConns struct {
	log *slog.Logger
	// retired is set when the ClientConn is retired or closed: its
	// connections then end on purpose.
	retired atomic.Bool

	mu   sync.Mutex
	up   map[string]int // remote address -> open connections
	lost map[string]bool
}

func newServerConns(log *slog.Logger) *serverConns {
	return &serverConns{log: log, up: map[string]int{}, lost: map[string]bool{}}
}

type connAddrKey struct{}

// TagConn remembers the connection's remote address for HandleConn.
func (s *serverConns) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	addr := ""
	if info.RemoteAddr != nil {
		addr = info.RemoteAddr.String()
	}
	return context.WithValue(ctx, connAddrKey{}, addr)
}

// HandleConn logs a connection's begin and end.
func (s *serverConns) HandleConn(ctx context.Context, st stats.ConnStats) {
	addr, _ := ctx.Value(connAddrKey{}).(string)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st.(type) {
	case *stats.ConnBegin:
		s.up[addr]++
		if s.lost[addr] {
			delete(s.lost, addr)
			s.log.Info("Reconnected to server", "address", addr, "servers_connected", len(s.up))
		} else {
			s.log.Debug("Connected to server", "address", addr, "servers_connected", len(s.up))
		}
	case *stats.ConnEnd:
		if s.up[addr]--; s.up[addr] <= 0 {
			delete(s.up, addr)
		}
		if s.retired.Load() {
			return
		}
		s.lost[addr] = true
		if len(s.up) > 0 {
			s.log.Warn("Lost connection to server; calls go to the other servers", "address", addr, "servers_connected", len(s.up))
		} else {
			s.log.Warn("Lost connection to server; no other server connected, retrying", "address", addr)
		}
	}
}

// TagRPC and HandleRPC complete stats.Handler; calls are not looked at.
func (s *serverConns) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC ignores call events.
func (s *serverConns) HandleRPC(context.Context, stats.RPCStats) {}

// connected returns the remote addresses with an open connection.
func (s *serverConns) connected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for a := range s.up {
		out = append(out, a)
	}
	return out
}

var _ stats.Handler = (*serverConns)(nil)
