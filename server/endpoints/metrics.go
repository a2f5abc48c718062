package endpoints

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe-hw/spire-hw/internal/connlimit"
)

// limitMetrics exports the TCP listener's pools, refusals and closes, so
// that an operator sees a cap biting without reading logs. SPIRE has no
// such metrics; they keep our names, under the server's prefix.
type limitMetrics struct {
	lim                   *limiter
	open, refused, closed *prometheus.Desc
}

func newLimitMetrics(lim *limiter, prefix string) *limitMetrics {
	return &limitMetrics{
		lim: lim,
		open: prometheus.NewDesc(prefix+"_tcp_connections",
			"Agent listener connections open, by pool: all, handshake (in the TLS handshake), unauthenticated (past it without a client certificate), verified (past it with a verified X.509-SVID).", []string{"pool"}, nil),
		refused: prometheus.NewDesc(prefix+"_tcp_connections_refused_total",
			"Agent listener connections closed because a cap was reached, by pool and cap (total, per_source, per_id).", []string{"pool", "cap"}, nil),
		closed: prometheus.NewDesc(prefix+"_tcp_connections_closed_total",
			"Agent listener connections closed by a timeout: handshake_timeout, or idle (no call in flight, and not an agent's or an admin's).", []string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *limitMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.open
	ch <- m.refused
	ch <- m.closed
}

// Collect implements prometheus.Collector.
func (m *limitMetrics) Collect(ch chan<- prometheus.Metric) {
	type capLabel struct {
		label  string
		reason connlimit.Reason
	}
	total, perSource := capLabel{"total", connlimit.ReasonTotal}, capLabel{"per_source", connlimit.ReasonPerKey}
	pools := []struct {
		name  string
		slots *connlimit.Slots
		caps  []capLabel
	}{
		{"all", m.lim.all, []capLabel{total}},
		{"handshake", m.lim.handshakes, []capLabel{total, perSource}},
		{"unauthenticated", m.lim.unauth, []capLabel{total, perSource}},
		// Verified connections are capped per SPIFFE ID only; in total,
		// by the all pool.
		{"verified", m.lim.verified, []capLabel{{"per_id", connlimit.ReasonPerKey}}},
	}
	for _, p := range pools {
		n, _ := p.slots.Count("")
		ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(n), p.name)
		for _, c := range p.caps {
			var v uint64
			if n, ok := m.lim.refused.Load(refusalKey{p.name, c.reason}); ok {
				v = n.(*atomic.Uint64).Load()
			}
			ch <- prometheus.MustNewConstMetric(m.refused, prometheus.CounterValue, float64(v), p.name, c.label)
		}
	}
	ch <- prometheus.MustNewConstMetric(m.closed, prometheus.CounterValue, float64(m.lim.timeouts.Load()), "handshake_timeout")
	ch <- prometheus.MustNewConstMetric(m.closed, prometheus.CounterValue, float64(m.lim.idle.Load()), "idle")
}
