// Package servertest starts a real server in-process for tests: SQLite (or
// PostgreSQL) datastore, real CA, real listeners on loopback and a Unix
// socket, and gives clients for the admin socket and for attested agents.
package servertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/server"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TrustDomain is the trust domain of test servers.
var TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// Options change the generated config.
type Options struct {
	// DataStore is the plugin_data body of DataStore "sql"; empty means
	// SQLite in the data directory.
	DataStore string
	// ServerExtra is appended inside the server block.
	ServerExtra string
	// Plugins is appended inside the plugins block (more NodeAttestors).
	Plugins string
	// Blocks is appended after the plugins block (a telemetry block).
	Blocks string
	// Log receives server logs; nil discards them.
	Log io.Writer
	// LogLevel is the server's live log level (logger/v1); nil means one
	// launched at debug.
	LogLevel *logging.Level
	// RateLimits keeps SPIRE's default rate limits (one attestation per
	// second per IP). Off by default: every test client comes from
	// 127.0.0.1, so tests attesting several agents would wait a second
	// for each. With it, ServerExtra may hold a ratelimit block.
	RateLimits bool
}

// Server is a running server.
type Server struct {
	Addr   string
	Socket string
	Dir    string
	cancel context.CancelFunc
	done   chan error
}

// Start runs a server until the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	// Unix socket paths are limited to 108 bytes: t.TempDir is too long.
	dir, err := os.MkdirTemp("", "srv")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	extra := opts.ServerExtra
	if !opts.RateLimits {
		extra = "ratelimit {\n\t\tattestation = false\n\t\tsigning = false\n\t}\n\t" + extra
	}
	ds := opts.DataStore
	if ds == "" {
		ds = fmt.Sprintf(`database_type = "sqlite3"
			connection_string = %q`, filepath.Join(dir, "datastore.sqlite3"))
	}
	conf := fmt.Sprintf(`
server {
	bind_address = "127.0.0.1"
	bind_port = "0"
	socket_path = %q
	trust_domain = %q
	data_dir = %q
	log_level = "DEBUG"
	%s
}
plugins {
	DataStore "sql" {
		plugin_data {
			%s
		}
	}
	KeyManager "memory" {
		plugin_data {}
	}
	NodeAttestor "join_token" {
		plugin_data {}
	}
	%s
}
%s
`, filepath.Join(dir, "api.sock"), TrustDomain.Name(), filepath.Join(dir, "data"), extra, ds, opts.Plugins, opts.Blocks)
	cfg, err := config.Parse("server.conf", []byte(conf), false)
	if err != nil {
		tb.Fatalf("servertest: config: %v", err)
	}
	w := opts.Log
	if w == nil {
		w = io.Discard
	}
	level := opts.LogLevel
	if level == nil {
		level = logging.NewLevel(slog.LevelDebug)
	}
	log, err := logging.NewWriter(w, level, "text")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		tb.Fatalf("servertest: start: %v", err)
	}
	s := &Server{Addr: srv.Addr().String(), Socket: cfg.Server.SocketPath, Dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	tb.Cleanup(s.Stop)
	return s
}

// Stop stops the server and waits for it; it is idempotent.
func (s *Server) Stop() {
	s.cancel()
	if s.done == nil {
		return
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
	s.done = nil
}

// Admin returns a client connection on the admin socket.
func (s *Server) Admin(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("unix://"+s.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// Bundle returns the server's current X.509 trust bundle.
func (s *Server) Bundle(tb testing.TB) *x509bundle.Bundle {
	tb.Helper()
	b, err := bundlev1.NewBundleClient(s.Admin(tb)).GetBundle(context.Background(), &bundlev1.GetBundleRequest{})
	if err != nil {
		tb.Fatalf("servertest: get bundle: %v", err)
	}
	out := x509bundle.New(TrustDomain)
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			tb.Fatal(err)
		}
		out.AddX509Authority(c)
	}
	return out
}

// Dial connects over TCP, verifying the server's SVID against the bundle
// and presenting svid as the client certificate when it is non-nil.
func (s *Server) Dial(tb testing.TB, svid *x509svid.SVID) *grpc.ClientConn {
	tb.Helper()
	return s.DialFrom(tb, "", svid)
}

// DialFrom is Dial from source address ip (any 127/8 address on loopback;
// "" lets the kernel choose), so that a test can play several sources to
// per-source limits.
func (s *Server) DialFrom(tb testing.TB, ip string, svid *x509svid.SVID) *grpc.ClientConn {
	tb.Helper()
	bundle := s.Bundle(tb)
	serverID := spiffeid.RequireFromPath(TrustDomain, "/spire/server")
	var tlsCfg *tls.Config
	if svid != nil {
		tlsCfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID))
	} else {
		tlsCfg = tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(serverID))
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}
	target := s.Addr
	if ip != "" {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}))
		target = "passthrough:///" + s.Addr
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// NewCSR returns a fresh P-256 key and a CSR for it.
func NewCSR(tb testing.TB) (crypto.Signer, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, csr
}

// CreateToken makes a join token through the admin API.
func (s *Server) CreateToken(tb testing.TB) string {
	tb.Helper()
	tok, err := agentv1.NewAgentClient(s.Admin(tb)).CreateJoinToken(context.Background(), &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		tb.Fatalf("servertest: create join token: %v", err)
	}
	return tok.Value
}

// AttestJoinToken runs AttestAgent with token over an unauthenticated TLS
// connection and returns the agent SVID.
func (s *Server) AttestJoinToken(ctx context.Context, conn *grpc.ClientConn, token string, key crypto.Signer, csr []byte) (*x509svid.SVID, error) {
	return s.Attest(ctx, conn, "join_token", []byte(token), nil, key, csr)
}

// Attest runs AttestAgent with the given attestation data, answering each
// challenge with respond, and returns the agent SVID.
func (s *Server) Attest(ctx context.Context, conn *grpc.ClientConn, typ string, payload []byte, respond func([]byte) ([]byte, error), key crypto.Signer, csr []byte) (*x509svid.SVID, error) {
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: typ, Payload: payload},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	if err != nil {
		return nil, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if res := resp.GetResult(); res != nil {
			stream.CloseSend()
			return ParseSVID(res.Svid.CertChain, key)
		}
		if respond == nil {
			return nil, fmt.Errorf("servertest: unexpected challenge")
		}
		answer, err := respond(resp.GetChallenge())
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: answer}}); err != nil {
			return nil, err
		}
	}
}

// ParseSVID assembles an x509svid.SVID from a DER chain and its key.
func ParseSVID(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// Agent is an attested agent with an mTLS connection to the server.
type Agent struct {
	ID   spiffeid.ID
	SVID *x509svid.SVID
	Conn *grpc.ClientConn
}

// NewAgent creates a join token, attests with it and connects with the
// resulting agent SVID.
func (s *Server) NewAgent(tb testing.TB) *Agent {
	tb.Helper()
	token := s.CreateToken(tb)
	key, csr := NewCSR(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := s.AttestJoinToken(ctx, s.Dial(tb, nil), token, key, csr)
	if err != nil {
		tb.Fatalf("servertest: attest: %v", err)
	}
	if !strings.HasSuffix(svid.ID.Path(), "/"+token) {
		tb.Fatalf("servertest: agent ID %q does not name the token", svid.ID)
	}
	return &Agent{ID: svid.ID, SVID: svid, Conn: s.Dial(tb, svid)}
}
