package plugin

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// FuzzMetricsService: whatever a plugin sends the Metrics host service
// (keys, labels, values, kinds, in any sequence), the daemon does not panic
// and its Prometheus registry still gathers, so a scrape never fails
// because of a plugin. The sinks live across inputs, so that clashes
// between one input's metric and an earlier one's are found too.
func FuzzMetricsService(f *testing.F) {
	reg := prometheus.NewRegistry()
	m, err := telemetry.New(hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}, InMem: true, EnableHostnameLabel: true, EnableTrustDomainLabel: true},
		telemetry.Options{Service: telemetry.ServerService, TrustDomain: "example.org", Registry: reg})
	if err != nil {
		f.Fatal(err)
	}
	host := newMetricsHost(m, nil)
	f.Add(uint8(0), "my_plugin.calls", float32(1), "method", "mint")
	f.Add(uint8(1), "my_plugin.calls", float32(2), "", "")
	f.Add(uint8(2), "my_plugin.calls_count", float32(1), "a", "b")
	f.Add(uint8(2), "my_plugin.lat", float32(1), "quantile", "0.5")
	f.Add(uint8(0), "my_plugin.lat_sum", float32(1), "", "")
	f.Add(uint8(3), "x.y", float32(math.NaN()), "1abc", "v")
	f.Add(uint8(0), "bad!name", float32(-1), "__name__", "x")
	f.Add(uint8(1), "g", float32(1), "b\x00a", "1\x002")
	f.Add(uint8(1), "g", float32(1), "a\x00b", "2\x001")
	f.Add(uint8(4), "k", float32(1), "host", "h")
	// A summary and a summary named after its _count series (found by
	// this target).
	f.Add(uint8(2), "m", float32(1), "", "")
	f.Add(uint8(2), "m_count", float32(1), "", "")
	f.Fuzz(func(t *testing.T, kind uint8, key string, val float32, names, values string) {
		k := strings.Split(key, ".")
		var labels []*metricsv1.Label
		if names != "" {
			vs := strings.Split(values, "\x00")
			for i, n := range strings.Split(names, "\x00") {
				v := ""
				if i < len(vs) {
					v = vs[i]
				}
				labels = append(labels, &metricsv1.Label{Name: n, Value: v})
			}
		}
		ctx := context.Background()
		switch kind % 5 {
		case 0:
			_, err = host.IncrCounter(ctx, &metricsv1.IncrCounterRequest{Key: k, Val: val, Labels: labels})
		case 1:
			_, err = host.SetGauge(ctx, &metricsv1.SetGaugeRequest{Key: k, Val: val, Labels: labels})
		case 2:
			_, err = host.AddSample(ctx, &metricsv1.AddSampleRequest{Key: k, Val: val, Labels: labels})
		case 3:
			_, err = host.MeasureSince(ctx, &metricsv1.MeasureSinceRequest{Key: k, Time: int64(val), Labels: labels})
		case 4:
			_, err = host.EmitKey(ctx, &metricsv1.EmitKeyRequest{Key: k, Val: val})
		}
		if err != nil {
			t.Fatalf("a plugin's emit failed: %v", err)
		}
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("the registry no longer gathers: %v (kinds %v)", err, host.kinds)
		}
	})
}
