package endpoints

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// metricValue returns the value of name with the given labels, or -1.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// TestLimitMetrics: the pools' gauges and the refusal counters follow what
// the listener holds and refuses.
func TestLimitMetrics(t *testing.T) {
	const perSource, dials = 2, 5
	lim := newLimiter(Limits{MaxHandshakesPerSource: perSource}, spiffeid.RequireTrustDomainFromString("example.org"), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	reg := prometheus.NewRegistry()
	reg.MustRegister(newLimitMetrics(lim, MetricsPrefix))
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{Listener: inner, lim: lim}
	defer l.Close()
	accepted := make(chan net.Conn, dials)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range dials {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	refused := map[string]string{"pool": "handshake", "cap": "per_source"}
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, reg, "spire_server_tcp_connections_refused_total", refused) != dials-perSource; {
		if time.Now().After(deadline) {
			t.Fatalf("refused{handshake,per_source} = %v, want %d", metricValue(t, reg, "spire_server_tcp_connections_refused_total", refused), dials-perSource)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for pool, want := range map[string]float64{"all": perSource, "handshake": perSource, "unauthenticated": 0, "verified": 0} {
		if got := metricValue(t, reg, "spire_server_tcp_connections", map[string]string{"pool": pool}); got != want {
			t.Errorf("connections{pool=%q} = %v, want %v", pool, got, want)
		}
	}
	if got := metricValue(t, reg, "spire_server_tcp_connections_refused_total", map[string]string{"pool": "all", "cap": "total"}); got != 0 {
		t.Errorf("refused{all,total} = %v, want 0", got)
	}
	// Closing a held connection frees its slots.
	(<-accepted).Close()
	if got := metricValue(t, reg, "spire_server_tcp_connections", map[string]string{"pool": "handshake"}); got != perSource-1 {
		t.Errorf("after a close, connections{pool=handshake} = %v, want %d", got, perSource-1)
	}
}
