package endpoints

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// splitCreds does TLS on TCP connections and nothing on Unix-socket ones,
// so one gRPC server can serve both listeners.
type splitCreds struct {
	tls credentials.TransportCredentials
}

func (c *splitCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.tls.ClientHandshake(ctx, authority, conn)
}

func (c *splitCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.LocalAddr().(*net.UnixAddr); ok {
		return insecure.NewCredentials().ServerHandshake(conn)
	}
	return c.tls.ServerHandshake(conn)
}

func (c *splitCreds) Info() credentials.ProtocolInfo { return c.tls.Info() }

func (c *splitCreds) Clone() credentials.TransportCredentials {
	return &splitCreds{tls: c.tls.Clone()}
}

// OverrideServerName is required by the interface; gRPC no longer calls it.
func (c *splitCreds) OverrideServerName(string) error { return nil }
