package api

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// secLog writes the security log: every refusal, with who was refused, why
// and from where, and never a secret. Refusals a remote caller can trigger
// at will go through a RefusalLog keyed by kind and source IP, so a flood
// gives one line per source and interval, which says how many it stood
// for; actions by admins (ban, evict) are logged each time.
type secLog struct {
	log      *slog.Logger
	refusals *connlimit.RefusalLog
}

// newSecLog returns a security log writing to log; interval 0 means
// RefusalLog's default of 10 s.
func newSecLog(log *slog.Logger, interval time.Duration) *secLog {
	return &secLog{log: log, refusals: connlimit.NewRefusalLog(log, interval)}
}

// refused logs a refusal of kind for key (a source IP and what was
// refused) at WARN, rate-limited per key.
func (s *secLog) refused(kind, key, msg string, args ...any) {
	s.refusals.Refused(kind+" "+key, msg, args...)
}

// peerAddr returns the caller's address as logged: host:port on TCP, the
// socket path on the admin socket.
func peerAddr(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	return p.Addr.String()
}

// sourceKey is what refusals from one source share: the IP on TCP (its
// ports are the caller's to choose), "local" on the admin socket.
func sourceKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UnixAddr:
		return "local"
	}
	return "unknown"
}

// callerName names the caller for the log: its SPIFFE ID when it presented
// an X.509-SVID (authenticated or not), "local" on the admin socket, and
// "unauthenticated" otherwise.
func callerName(ctx context.Context) string {
	if c, ok := CallerFromContext(ctx); ok {
		switch {
		case c.Local:
			return "local"
		case !c.ID.IsZero():
			return c.ID.String()
		}
		return "unauthenticated"
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unauthenticated"
	}
	if _, ok := p.Addr.(*net.UnixAddr); ok {
		return "local"
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
		// The TLS layer verified the chain; the ID is what the caller
		// claims to be, even when authentication then refused it.
		if id, err := x509svid.IDFromCert(info.State.PeerCertificates[0]); err == nil {
			return id.String()
		}
	}
	return "unauthenticated"
}

// redact removes secret from msg: an attestor's error may quote its input,
// and for join tokens that input is the secret.
func redact(msg string, secret []byte) string {
	if len(secret) < 4 {
		return msg
	}
	return strings.ReplaceAll(msg, string(secret), "[redacted]")
}
