package federation

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
)

// TestACMEWithoutDirectory: ACME cannot work without its directory (here,
// a closed port standing for the unreachable internet). The server says so
// at start, and a handshake fails in bounded time instead of hanging or
// serving some other certificate.
func TestACMEWithoutDirectory(t *testing.T) {
	if _, err := NewACME(ACMEConfig{CacheDir: t.TempDir()}, nil); err == nil {
		t.Fatal("ACME without domain_name accepted")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + l.Addr().String() + "/directory"
	l.Close()
	var logs syncbuf.Buffer
	a, err := NewACME(ACMEConfig{DirectoryURL: closed, DomainName: "bundle.example.org", ToSAccepted: true, CacheDir: t.TempDir()},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "without internet access no certificate is issued") {
		t.Fatalf("no start-up warning about ACME's needs: %s", logs.String())
	}
	e := startEndpoint(t, EndpointConfig{TrustDomain: tdB, DataStore: sqlitetest.Open(t), GetCertificate: a.GetCertificate, NextProtos: a.NextProtos()})
	d := &net.Dialer{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: "bundle.example.org", InsecureSkipVerify: true}}).DialContext(ctx, "tcp", e.Addr().String()) //nolint:gosec // any certificate would be wrong here
	if err == nil {
		conn.Close()
		t.Fatal("handshake succeeded without an ACME directory")
	}
	if ctx.Err() != nil {
		t.Fatalf("handshake hung: %v", err)
	}
	// A name outside domain_name is refused by the host policy.
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.org"}); err == nil {
		t.Fatal("certificate requested for a name other than domain_name")
	}
}
