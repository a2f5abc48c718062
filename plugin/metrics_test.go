package plugin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/plugin"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	"google.golang.org/grpc"
)

func TestMetricsService(t *testing.T) {
	reg := prometheus.NewRegistry()
	svc := plugin.MetricsService(reg, "spire_server", nil)
	conn := grpctest.Serve(t, func(srv *grpc.Server) { svc.RegisterServer(srv) })
	c := metricsv1.NewMetricsClient(conn)
	ctx := context.Background()
	lbl := []*metricsv1.Label{{Name: "method", Value: "mint"}}
	for range 3 {
		if _, err := c.IncrCounter(ctx, &metricsv1.IncrCounterRequest{Key: []string{"my_plugin", "calls"}, Val: 1, Labels: lbl}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetGauge(ctx, &metricsv1.SetGaugeRequest{Key: []string{"my_plugin", "keys"}, Val: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MeasureSince(ctx, &metricsv1.MeasureSinceRequest{Key: []string{"my_plugin", "latency"}, Time: time.Now().Add(-time.Second).UnixNano()}); err != nil {
		t.Fatal(err)
	}
	// Same name, other labels: dropped, not an error to the plugin.
	if _, err := c.IncrCounter(ctx, &metricsv1.IncrCounterRequest{Key: []string{"my_plugin", "calls"}, Val: 1}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP spire_server_my_plugin_calls Emitted by an external plugin.
# TYPE spire_server_my_plugin_calls counter
spire_server_my_plugin_calls{method="mint"} 3
# HELP spire_server_my_plugin_keys Emitted by an external plugin.
# TYPE spire_server_my_plugin_keys gauge
spire_server_my_plugin_keys 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "spire_server_my_plugin_calls", "spire_server_my_plugin_keys"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "spire_server_my_plugin_latency"); n != 1 {
		t.Fatalf("latency series: %d", n)
	}
}
