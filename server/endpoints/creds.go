package endpoints

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
)

// limitedTLS does the TLS handshake on connections from the limited
// listener and, once it is done, moves each out of the handshake pool:
// into the unauthenticated pool without a client certificate, or out of
// both with one (the TLS configuration has already verified it).
type limitedTLS struct {
	credentials.TransportCredentials
}

func (c limitedTLS) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tlsConn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	lc, ok := raw.(*conn)
	if !ok {
		return tlsConn, info, nil
	}
	tlsInfo, _ := info.(credentials.TLSInfo)
	if err := lc.handshakeDone(len(tlsInfo.State.PeerCertificates) > 0); err != nil {
		return nil, nil, err
	}
	return tlsConn, info, nil
}

func (c limitedTLS) Clone() credentials.TransportCredentials {
	return limitedTLS{c.TransportCredentials.Clone()}
}

// rpcTracker tells each limited connection when calls start and end, so
// that an unauthenticated connection is closed only when it has none in
// flight (an agent in the middle of AttestAgent keeps its connection).
type rpcTracker struct{ lim *limiter }

type connContextKey struct{}

func (t rpcTracker) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if c := t.lim.lookup(info.RemoteAddr, info.LocalAddr); c != nil {
		return context.WithValue(ctx, connContextKey{}, c)
	}
	return ctx
}

func (rpcTracker) HandleConn(context.Context, stats.ConnStats) {}

func (rpcTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (rpcTracker) HandleRPC(ctx context.Context, s stats.RPCStats) {
	c, _ := ctx.Value(connContextKey{}).(*conn)
	if c == nil {
		return
	}
	switch s.(type) {
	case *stats.Begin:
		c.rpcBegin()
	case *stats.End:
		c.rpcEnd()
	}
}
