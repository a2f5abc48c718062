package endpoints

import (
	"context"
	"fmt"
	"net"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// limitedTLS does the TLS handshake on connections from the limited
// listener and, once it is done, moves each out of the handshake pool:
// into the unauthenticated pool without a client certificate, or into the
// verified pool under its SPIFFE ID with one (the TLS configuration has
// already verified it as an X.509-SVID).
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
	var id spiffeid.ID
	if tlsInfo, _ := info.(credentials.TLSInfo); len(tlsInfo.State.PeerCertificates) > 0 {
		if id, err = x509svid.IDFromCert(tlsInfo.State.PeerCertificates[0]); err != nil {
			// VerifyPeerCertificate has parsed it already: unreachable
			// unless the TLS configuration changes.
			return nil, nil, fmt.Errorf("endpoints: client certificate: %w", err)
		}
	}
	if err := lc.handshakeDone(id); err != nil {
		return nil, nil, err
	}
	return tlsConn, info, nil
}

func (c limitedTLS) Clone() credentials.TransportCredentials {
	return limitedTLS{c.TransportCredentials.Clone()}
}

// rpcTracker tells each limited connection when calls start and end, so
// that a connection under the idle timeout is closed only when it has none
// in flight (an agent in the middle of AttestAgent keeps its connection),
// and refuses, before their handlers run, calls that begin on a connection
// the idle timer has decided to close.
type rpcTracker struct{ lim *limiter }

// errClosingIdle refuses a call that reached a connection being closed for
// idleness; the client retries on a new connection.
var errClosingIdle = status.Error(codes.Unavailable, "endpoints: connection is closing after its idle timeout; retry on a new connection")

func connFrom(ctx context.Context) *conn {
	c, _ := ctx.Value(connContextKey{}).(*conn)
	return c
}

// unary and stream run before the api package's interceptors, so that a
// refused call has no effect (a join token is not spent on a call whose
// answer the closing connection would lose).
func (t rpcTracker) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c := connFrom(ctx); c != nil && !c.admit() {
		return nil, errClosingIdle
	}
	return handler(ctx, req)
}

func (t rpcTracker) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if c := connFrom(ss.Context()); c != nil && !c.admit() {
		return errClosingIdle
	}
	return handler(srv, ss)
}

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
	c := connFrom(ctx)
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
