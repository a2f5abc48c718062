package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// run starts m.Run and stops it at the end of the test.
func run(t *testing.T, m *Metrics) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// calls drives the interceptors as a server would.
func calls(rpc *RPC) {
	ok := func(context.Context, any) (any, error) { return "r", nil }
	denied := func(context.Context, any) (any, error) { return nil, status.Error(codes.PermissionDenied, "no") }
	info := &grpc.UnaryServerInfo{FullMethod: "/spire.api.server.agent.v1.Agent/CreateJoinToken"}
	for _, h := range []grpc.UnaryHandler{ok, ok, denied} {
		_, _ = rpc.Unary(context.Background(), nil, info, h)
	}
	_ = rpc.Stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/SpiffeWorkloadAPI/FetchX509SVID"},
		func(any, grpc.ServerStream) error { return nil })
}

// A scrape shows the runtime collectors and SPIRE's names for the calls, as
// go-metrics' Prometheus sink writes them: the service prefix and the key
// parts joined by '_', counters without _total, the elapsed time a summary,
// and the host and status labels; a port in use stops Listen with the
// address in the error.
func TestPrometheus(t *testing.T) {
	reg := NewRegistry()
	m, err := New(hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}, EnableHostnameLabel: true},
		Options{Service: ServerService, TrustDomain: "example.org", Version: "1.2.3", Registry: reg, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	e, err := Listen(hclconf.Prometheus{Host: "127.0.0.1", Port: 0}, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("Close after Serve: %v", err)
		}
	}()
	calls(NewRPC(m))

	host, _ := os.Hostname()
	var body string
	want := []string{
		`# TYPE spire_server_rpc_agent_v1_agent_create_join_token counter`,
		`spire_server_rpc_agent_v1_agent_create_join_token{host="` + host + `",status="OK"} 2`,
		`spire_server_rpc_agent_v1_agent_create_join_token{host="` + host + `",status="PermissionDenied"} 1`,
		`# TYPE spire_server_rpc_agent_v1_agent_create_join_token_elapsed_time summary`,
		`spire_server_rpc_agent_v1_agent_create_join_token_elapsed_time_count{host="` + host + `",status="OK"} 2`,
		`spire_server_rpc_workload_api_fetch_x509svid{host="` + host + `",status="OK"} 1`,
		`spire_server_workload_api_connection{host="` + host + `"} 1`,
		`spire_server_workload_api_connections{host="` + host + `"} 0`,
		`spire_server_started{host="` + host + `",trust_domain_id="example_org",version="1_2_3"} 1`,
		`spire_server_uptime_in_ms{host="` + host + `"}`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	}
	// The runtime statistics come from Run's first tick.
	want = append(want, `spire_server_runtime_num_goroutines{host="`+host+`"}`)
	for deadline := time.Now().Add(10 * time.Second); ; {
		body = scrape(t, e.Addr().String())
		if strings.Contains(body, "spire_server_runtime_num_goroutines") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("scrape lacks %q in\n%s", w, body)
		}
	}
	if strings.Contains(body, "_total{") && strings.Contains(body, "spire_server_rpc_agent_v1_agent_create_join_token_total") {
		t.Error("a go-metrics counter got a _total suffix")
	}

	port := e.Addr().(*net.TCPAddr).Port
	_, err = Listen(hclconf.Prometheus{Host: "127.0.0.1", Port: port}, NewRegistry(), quiet)
	if err == nil || !strings.Contains(err.Error(), e.Addr().String()) {
		t.Errorf("second Listen on %s: %v", e.Addr(), err)
	}
}

// udpListener collects what arrives on a local UDP socket.
func udpListener(t *testing.T) (net.PacketConn, <-chan string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan string, 1024)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return pc, ch
}

// await reads packets until every line of want has been seen as a line
// (or, for binary protocols, a substring) of what arrived.
func await(t *testing.T, ch <-chan string, want ...string) string {
	t.Helper()
	var got strings.Builder
	deadline := time.After(20 * time.Second)
	for {
		all := got.String()
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(all, w) })
		if len(missing) == 0 {
			return all
		}
		select {
		case p, ok := <-ch:
			if !ok {
				t.Fatalf("listener closed; missing %q in:\n%s", missing, all)
			}
			got.WriteString(p + "\n")
		case <-deadline:
			t.Fatalf("missing %q in:\n%s", missing, all)
		}
	}
}

// Statsd receives SPIRE's keys joined by '.', with the host as statsd has
// no labels: go-metrics' statsd sink folds labels into the name.
func TestStatsd(t *testing.T) {
	pc, ch := udpListener(t)
	m, err := New(hclconf.Telemetry{Statsd: []hclconf.Address{{Address: pc.LocalAddr().String()}}},
		Options{Service: AgentService, TrustDomain: "example.org", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	m.IncrCounter([]string{"agent_svid", "rotate"}, 1)
	m.SetGauge([]string{"workload_api", "connections"}, 3)
	await(t, ch, "spire_agent.agent_svid.rotate:1.000000|c", "spire_agent.workload_api.connections:3.000000|g")
}

// DogStatsd receives the same names with labels as tags, as in SPIRE's
// documented example (spire_server.rpc.agent.v1.agent.attest_agent:1|c|#status:OK).
func TestDogStatsd(t *testing.T) {
	pc, ch := udpListener(t)
	m, err := New(hclconf.Telemetry{DogStatsd: []hclconf.Address{{Address: pc.LocalAddr().String()}}, EnableHostnameLabel: true},
		Options{Service: ServerService, TrustDomain: "example.org", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	rpc := NewRPC(m)
	_, _ = rpc.Unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/spire.api.server.agent.v1.Agent/AttestAgent"},
		func(context.Context, any) (any, error) { return nil, nil })
	host, _ := os.Hostname()
	await(t, ch, "spire_server.rpc.agent.v1.agent.attest_agent:1|c|#status:OK,host:"+host,
		"spire_server.rpc.agent.v1.agent.attest_agent.elapsed_time:")
}

// M3 receives tally's thrift batches over UDP: the metric name (the key
// without the service and type parts, joined by '_') and the service and
// env tags arrive in the packet.
func TestM3(t *testing.T) {
	pc, ch := udpListener(t)
	m, err := New(hclconf.Telemetry{M3: []hclconf.M3{{Address: pc.LocalAddr().String(), Env: "staging"}}},
		Options{Service: ServerService, TrustDomain: "example.org", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	m.IncrCounter([]string{"server_ca", "sign", "x509_svid"}, 1)
	await(t, ch, "server_ca_sign_x509_svid", "spire_server", "staging")
}

// InMem keeps what is emitted and MetricPrefix replaces the service name;
// BlockedPrefixes and BlockedLabels filter before any sink, as go-metrics
// does for SPIRE.
func TestInMemAndFilters(t *testing.T) {
	m, err := New(hclconf.Telemetry{InMem: true, MetricPrefix: "edge", BlockedPrefixes: []string{"edge.datastore"},
		BlockedLabels: []string{"status"}}, Options{Service: ServerService, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	var err2 error = status.Error(codes.NotFound, "x")
	m.StartCall("datastore", "node", "fetch").Done(&err2)
	m.StartCall("svid", "rotate").Done(nil)
	data := m.inmem().Data()
	var names []string
	for _, iv := range data {
		iv.RLock()
		for k := range iv.Counters {
			names = append(names, k)
		}
		iv.RUnlock()
	}
	if !slices.Contains(names, "edge.svid.rotate") {
		t.Errorf("counters %q lack edge.svid.rotate (status label blocked)", names)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "edge.datastore") || strings.Contains(n, "status") {
			t.Errorf("counter %q escaped the filters", n)
		}
	}
}

// RPCKey gives SPIRE's keys (its doc's example and its middleware's rules).
func TestRPCKey(t *testing.T) {
	for in, want := range map[string]string{
		"/spire.api.server.agent.v1.Agent/AttestAgent":                                 "rpc.agent.v1.agent.attest_agent",
		"/spire.api.server.svid.v1.SVID/BatchNewX509SVID":                              "rpc.svid.v1.svid.batch_new_x509svid",
		"/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries":                       "rpc.entry.v1.entry.sync_authorized_entries",
		"/SpiffeWorkloadAPI/FetchJWTSVID":                                              "rpc.workload_api.fetch_jwtsvid",
		"/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets":                "rpc.sds.v3.stream_secrets",
		"/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/SubscribeToX509SVIDs": "rpc.delegated_identity.subscribe_to_x509_svids",
		"/grpc.health.v1.Health/Check":                                                 "rpc.health.check",
		"/spire.api.server.localauthority.v1.LocalAuthority/GetX509AuthorityState":     "rpc.localauthority.v1.local_authority.get_x509_authority_state",
	} {
		if got := strings.Join(RPCKey(in), "."); got != want {
			t.Errorf("RPCKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// Without a sink New returns nil, and a nil Metrics and its RPC pass
// everything through.
func TestNoSink(t *testing.T) {
	m, err := New(hclconf.Telemetry{EnableHostnameLabel: true}, Options{Service: ServerService})
	if err != nil || m != nil {
		t.Fatalf("New without sinks = %v, %v", m, err)
	}
	m.IncrCounter([]string{"x"}, 1)
	m.StartCall("y").Done(nil)
	calls(NewRPC(m))
	var r *RPC
	calls(r)
}
