package compare

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/fleet"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// trustDomain is the trust domain of every benchmark deployment.
var trustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// Impl is one implementation under test: a directory holding its
// spire-server and spire-agent binaries.
type Impl struct {
	// Name labels the implementation in progress lines and reports.
	Name string
	// Dir holds spire-server and spire-agent.
	Dir string
	// Lineage makes the agent attest workloads with our "lineage"
	// attestor instead of "unix"; only our agent has it.
	Lineage bool
	// FleetPush makes the fleet scenario's simulated agents hold our
	// change-notice stream (sim/fleet's WithPush); only our server has
	// the service.
	FleetPush bool
}

func (i Impl) server() string { return filepath.Join(i.Dir, "spire-server") }
func (i Impl) agent() string  { return filepath.Join(i.Dir, "spire-agent") }

// Check reports whether both binaries are present.
func (i Impl) Check() error {
	for _, p := range []string{i.server(), i.agent()} {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return fmt.Errorf("compare: %s: no binary at %s", i.Name, p)
		}
	}
	return nil
}

// server is a running spire-server and the harness's connections to it.
type server struct {
	impl   Impl
	dir    string
	socket string
	addr   string
	proc   *proc
	admin  *grpc.ClientConn
	bundle *x509bundle.Bundle
}

// serverConf is the configuration both servers run with. Rate limits are
// off on both: SPIRE's per-IP budgets (one attestation per second, 500
// CSRs per second), which both servers enforce by default, would measure
// the limiter, not the server, since every simulated agent comes from
// 127.0.0.1. The rest is SPIRE's defaults.
const serverConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "WARN"
    default_x509_svid_ttl = "1h"
    ratelimit {
        attestation = false
        signing = false
    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`

// startServer runs im's server in a fresh directory under root and waits
// until its admin API answers.
func startServer(ctx context.Context, g *group, root string, im Impl) (*server, error) {
	return startServerOn(ctx, g, root, im, nil)
}

// startServerOn is startServer with the server on split's server CPUs,
// or unpinned when split is nil.
func startServerOn(ctx context.Context, g *group, root string, im Impl, split *cpuSplit) (*server, error) {
	dir, err := os.MkdirTemp(root, "srv")
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{impl: im, dir: dir, socket: filepath.Join(dir, "api.sock"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	conf := filepath.Join(dir, "server.conf")
	data := filepath.Join(dir, "data")
	text := fmt.Sprintf(serverConf, port, s.socket, trustDomain.Name(), data, filepath.Join(data, "datastore.sqlite3"))
	// BENCH_SERVER_PPROF=<port> lets a profiler into the server under
	// test (both implementations know SPIRE's profiling keys).
	if p := os.Getenv("BENCH_SERVER_PPROF"); p != "" {
		text = strings.Replace(text, "    log_level", fmt.Sprintf("    profiling_enabled = true\n    profiling_port = %s\n    log_level", p), 1)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	start := func() (err error) {
		s.proc, err = startProc(dir, im.server(), "run", "-config", conf)
		return err
	}
	if split != nil {
		err = split.startServer(start)
	} else {
		err = start()
	}
	if err != nil {
		return nil, err
	}
	g.add(s.proc)
	if s.admin, err = grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, fmt.Errorf("compare: admin client: %w", err)
	}
	err = poll(ctx, 60*time.Second, 100*time.Millisecond, im.Name+" server", func() error {
		if err := s.proc.exited(); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		b, err := bundlev1.NewBundleClient(s.admin).GetBundle(cctx, &bundlev1.GetBundleRequest{})
		if err != nil {
			return err
		}
		s.bundle = x509bundle.New(trustDomain)
		for _, a := range b.X509Authorities {
			c, err := x509.ParseCertificate(a.Asn1)
			if err != nil {
				return fmt.Errorf("compare: bundle: %w", err)
			}
			s.bundle.AddX509Authority(c)
		}
		if len(s.bundle.X509Authorities()) == 0 {
			return errors.New("compare: empty bundle")
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// close stops the server and drops the admin connection.
func (s *server) close() {
	if s.admin != nil {
		s.admin.Close()
	}
	s.proc.Stop()
}

// token creates a join token through the admin API.
func (s *server) token(ctx context.Context) (string, error) {
	tok, err := agentv1.NewAgentClient(s.admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 3600})
	if err != nil {
		return "", fmt.Errorf("compare: create join token: %w", err)
	}
	return tok.Value, nil
}

// workloadSelector matches the harness process under both attestors.
func workloadSelector() *types.Selector {
	return &types.Selector{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}
}

// createEntries registers n workload entries parented to parent, each with
// its own SPIFFE ID under prefix and the harness's uid selector, in
// batches, and returns their IDs. progress, if set, sees each batch land.
func (s *server) createEntries(ctx context.Context, parent spiffeid.ID, prefix string, n int, progress func(done int)) ([]string, error) {
	return s.createEntriesFor(ctx, parent, prefix, n, workloadSelector(), progress)
}

// createEntriesFor is createEntries with another selector than the
// harness's.
func (s *server) createEntriesFor(ctx context.Context, parent spiffeid.ID, prefix string, n int, sel *types.Selector, progress func(done int)) ([]string, error) {
	const batch = 500
	client := entryv1.NewEntryClient(s.admin)
	ids := make([]string, 0, n)
	for start := 0; start < n; start += batch {
		var es []*types.Entry
		for i := start; i < min(n, start+batch); i++ {
			es = append(es, &types.Entry{
				ParentId:    &types.SPIFFEID{TrustDomain: parent.TrustDomain().Name(), Path: parent.Path()},
				SpiffeId:    &types.SPIFFEID{TrustDomain: trustDomain.Name(), Path: fmt.Sprintf("%s/%d", prefix, i)},
				Selectors:   []*types.Selector{sel},
				X509SvidTtl: 3600,
			})
		}
		resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: es})
		if err != nil {
			return nil, fmt.Errorf("compare: batch create entry: %w", err)
		}
		for _, r := range resp.Results {
			if c := codes.Code(r.Status.GetCode()); c != codes.OK {
				return nil, fmt.Errorf("compare: create entry: %s: %s", c, r.Status.GetMessage())
			}
			ids = append(ids, r.Entry.Id)
		}
		if progress != nil {
			progress(len(ids))
		}
	}
	return ids, nil
}

// dial connects to the server's agent API over TLS, authenticating the
// server by its SPIFFE ID and presenting svid when it is not nil (an
// attested agent).
func (s *server) dial(svid *x509svid.SVID) (*grpc.ClientConn, error) {
	serverID, err := spiffeid.FromPath(trustDomain, "/spire/server")
	if err != nil {
		return nil, err
	}
	var cfg *tls.Config
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, s.bundle, tlsconfig.AuthorizeID(serverID))
	} else {
		cfg = tlsconfig.TLSClientConfig(s.bundle, tlsconfig.AuthorizeID(serverID))
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("compare: dial %s: %w", s.addr, err)
	}
	return conn, nil
}

// keyCSR is a fresh P-256 key and a CSR for it; keys are made before a
// measurement starts so that key generation is never timed.
type keyCSR struct {
	key crypto.Signer
	csr []byte
}

func newKeyCSR() (keyCSR, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyCSR{}, fmt.Errorf("compare: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return keyCSR{}, fmt.Errorf("compare: %w", err)
	}
	return keyCSR{key: key, csr: csr}, nil
}

// attest runs join-token node attestation over conn, as an agent does
// (the same client the fleet simulator uses), and returns the agent SVID
// verified against the bundle.
func (s *server) attest(ctx context.Context, conn *grpc.ClientConn, token string, kc keyCSR) (*x509svid.SVID, error) {
	return fleet.AttestJoinToken(ctx, conn, s.bundle, token, kc.key, kc.csr)
}

// verifySVID parses a DER chain and verifies it against the server's
// bundle with go-spiffe, so that a benchmark never counts a bad answer.
func (s *server) verifySVID(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("compare: parse SVID: %w", err)
		}
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, s.bundle)
	if err != nil {
		return nil, fmt.Errorf("compare: verify SVID: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// bundlePEM is the server's bundle for an agent's trust_bundle_path.
func (s *server) bundlePEM() []byte {
	var b []byte
	for _, c := range s.bundle.X509Authorities() {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// agent is a running spire-agent.
type agent struct {
	impl   Impl
	dir    string
	socket string
	id     spiffeid.ID
	proc   *proc
}

// agentConf is the configuration both agents run with; our agent may
// swap the unix workload attestor for lineage.
const agentConf = `agent {
    data_dir = %q
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "%s"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
%s}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor %q {
        plugin_data {}
    }
}
`

// startAgent runs im's agent against s with a fresh join token and waits
// until it reports healthy.
func startAgent(ctx context.Context, g *group, root string, im Impl, s *server) (*agent, error) {
	return startAgentWith(ctx, g, root, im, s, nil)
}

// startAgentWith is startAgent with more agent-block settings: extra gets
// the agent's directory and returns HCL lines.
func startAgentWith(ctx context.Context, g *group, root string, im Impl, s *server, extra func(dir string) string) (*agent, error) {
	dir, err := os.MkdirTemp(root, "agt")
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	token, err := s.token(ctx)
	if err != nil {
		return nil, err
	}
	bundle := filepath.Join(dir, "bootstrap.crt")
	if err := os.WriteFile(bundle, s.bundlePEM(), 0o644); err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	wa := "unix"
	if im.Lineage {
		wa = "lineage"
	}
	a := &agent{impl: im, dir: dir, socket: filepath.Join(dir, "agent.sock")}
	if a.id, err = spiffeid.FromPath(trustDomain, "/spire/agent/join_token/"+token); err != nil {
		return nil, err
	}
	port := s.addr[strings.LastIndex(s.addr, ":")+1:]
	conf := filepath.Join(dir, "agent.conf")
	more := ""
	if extra != nil {
		more = extra(dir)
	}
	// BENCH_AGENT_PPROF=<port>, as BENCH_SERVER_PPROF for the agent.
	if p := os.Getenv("BENCH_AGENT_PPROF"); p != "" {
		more += fmt.Sprintf("    profiling_enabled = true\n    profiling_port = %s\n", p)
	}
	text := fmt.Sprintf(agentConf, filepath.Join(dir, "data"), port, a.socket, bundle, trustDomain.Name(), more, wa)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	if a.proc, err = startProc(dir, im.agent(), "run", "-config", conf, "-joinToken", token); err != nil {
		return nil, err
	}
	g.add(a.proc)
	err = poll(ctx, 60*time.Second, 200*time.Millisecond, im.Name+" agent", func() error {
		if err := a.proc.exited(); err != nil {
			return err
		}
		_, err := runCLI(ctx, dir, im.agent(), "healthcheck", "-socketPath", a.socket)
		return err
	})
	if err != nil {
		a.proc.Stop()
		return nil, err
	}
	return a, nil
}

func (a *agent) addr() string { return "unix://" + a.socket }
