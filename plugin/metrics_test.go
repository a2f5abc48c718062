package plugin_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"google.golang.org/grpc"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
)

// sinks is a daemon's telemetry with a Prometheus registry and, when
// statsd is set, a Statsd sink to it; it runs until the test ends.
func sinks(t testing.TB, statsd string) (*telemetry.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}}
	if statsd != "" {
		cfg.Statsd = []hclconf.Address{{Address: statsd}}
	}
	m, err := telemetry.New(cfg, telemetry.Options{Service: telemetry.ServerService, TrustDomain: "example.org", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return m, reg
}

// gathered is the registry's families by name; a gather error (a family
// that would fail a scrape) fails the test.
func gathered(t testing.TB, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// udp collects the packets that arrive on a loopback socket.
func udp(t *testing.T) (string, <-chan string) {
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
	return pc.LocalAddr().String(), ch
}

// TestMetricsServiceFeedsEverySink: a real SDK plugin's metrics, through
// the Metrics host service, reach every sink of the daemon under its
// prefix as SPIRE names them (here Prometheus and a Statsd listener on
// loopback); what would break a sink is dropped with a warning, and the
// registry still gathers.
func TestMetricsServiceFeedsEverySink(t *testing.T) {
	addr, packets := udp(t)
	m, reg := sinks(t, addr)
	var logs syncbuf.Buffer
	p, err := plugin.Load(context.Background(), plugin.Config{
		Type: "Notifier", Name: "emitter", Cmd: pluginbuild.Build(t, "metricsemitter"),
		Data: "prefix = \"my_plugin\"\nhostile = true", TrustDomain: td, Service: "spire.plugin.server.notifier.v1.Notifier",
		HostServices: []pluginsdk.ServiceServer{plugin.MetricsService(m, slog.New(slog.NewTextHandler(&logs, nil)))},
		Log:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	// Configure emitted once; a bundle event emits again.
	if _, err := notifierv1.NewNotifierClient(p.Conn()).Notify(context.Background(), &notifierv1.NotifyRequest{}); err != nil {
		t.Fatal(err)
	}

	var got strings.Builder
	want := []string{"spire_server.my_plugin.calls.configure:1.000000|c", "spire_server.my_plugin.calls.notify:1.000000|c",
		"spire_server.my_plugin.keys:4.000000|g", "spire_server.my_plugin.size:2.500000|ms",
		"spire_server.my_plugin.latency:", "spire_server.my_plugin.emitted:7.000000|kv"}
	deadline := time.After(20 * time.Second)
	for missing := want; len(missing) > 0; {
		select {
		case pkt, ok := <-packets:
			if !ok {
				t.Fatal("statsd listener closed")
			}
			got.WriteString(pkt + "\n")
		case <-deadline:
			t.Fatalf("statsd lacks %q in:\n%s", missing, got.String())
		}
		missing = nil
		for _, w := range want {
			if !strings.Contains(got.String(), w) {
				missing = append(missing, w)
			}
		}
	}

	fams := gathered(t, reg)
	calls := fams["spire_server_my_plugin_calls"]
	if calls.GetType() != dto.MetricType_COUNTER || len(calls.GetMetric()) != 2 {
		t.Fatalf("spire_server_my_plugin_calls: %v", calls)
	}
	for _, s := range calls.GetMetric() {
		if l := s.GetLabel(); len(l) != 1 || l[0].GetName() != "method" || s.GetCounter().GetValue() != 1 {
			t.Errorf("calls series %v", s)
		}
	}
	if g := fams["spire_server_my_plugin_keys"]; g.GetType() != dto.MetricType_GAUGE || g.GetMetric()[0].GetGauge().GetValue() != 4 {
		t.Errorf("keys: %v", g)
	}
	if s := fams["spire_server_my_plugin_latency"]; s.GetType() != dto.MetricType_SUMMARY || s.GetMetric()[0].GetSummary().GetSampleSum() < 1000 {
		t.Errorf("latency, a second in milliseconds: %v", s)
	}
	for _, bad := range []string{"spire_server_my_plugin_quantiled", "spire_server_my_plugin_negative"} {
		if _, ok := fams[bad]; ok {
			t.Errorf("%s was not dropped", bad)
		}
	}
	for _, reason := range []string{`metric=my_plugin.quantiled reason="label name \"quantile\" is reserved"`,
		`metric=my_plugin.negative reason="negative counter increment"`, `metric=my_plugin.bad!name`,
		`metric=my_plugin_calls reason="emitted as a counter before, now as a gauge"`} {
		if !strings.Contains(logs.String(), reason) {
			t.Errorf("no warning with %s in:\n%s", reason, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "my_plugin.negative"); n != 1 {
		t.Errorf("%d warnings for one metric dropped twice, want 1", n)
	}
}

// TestMetricsServiceWithoutSinks: with no telemetry configured (a nil
// Metrics, or no sink at all) a plugin's calls succeed and go nowhere.
func TestMetricsServiceWithoutSinks(t *testing.T) {
	var none *telemetry.Metrics
	for _, sink := range []plugin.MetricsSink{none, nil} {
		conn := grpctest.Serve(t, func(srv *grpc.Server) { plugin.MetricsService(sink, nil).RegisterServer(srv) })
		c := metricsv1.NewMetricsClient(conn)
		if _, err := c.IncrCounter(context.Background(), &metricsv1.IncrCounterRequest{Key: []string{"x"}, Val: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.EmitKey(context.Background(), &metricsv1.EmitKeyRequest{Key: []string{"x"}, Val: 1}); err != nil {
			t.Fatal(err)
		}
	}
}
