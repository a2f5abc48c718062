package workloadapi

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe-hw/spire-hw/internal/connlimit"
)

// connMetrics exports a limited listener's socket connections: accepted,
// open and refused. SPIRE has none of these (its workload_api.connection
// and workload_api.connections count calls, and are emitted by
// telemetry.RPC), so they carry our names, with "socket" to keep them apart.
type connMetrics struct {
	l                       *connlimit.Listener
	accepted, open, refused *prometheus.Desc
}

// newConnMetrics describes l's counters with the metric name prefix
// ("spire_agent_workload_api").
func newConnMetrics(l *connlimit.Listener, prefix string) *connMetrics {
	return &connMetrics{
		l:        l,
		accepted: prometheus.NewDesc(prefix+"_socket_connections_accepted_total", "Workload API socket connections accepted.", nil, nil),
		open:     prometheus.NewDesc(prefix+"_socket_connections", "Workload API socket connections open.", nil, nil),
		refused: prometheus.NewDesc(prefix+"_connections_refused_total",
			"Workload API connections closed at accept, by the cap that refused them.", []string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *connMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.accepted
	ch <- m.open
	ch <- m.refused
}

// Collect implements prometheus.Collector.
func (m *connMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.l.Stats()
	ch <- prometheus.MustNewConstMetric(m.accepted, prometheus.CounterValue, float64(st.Accepted))
	ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(st.Open))
	for _, r := range []struct {
		label  string
		reason connlimit.Reason
	}{
		{"per_uid", connlimit.ReasonPerKey},
		{"total", connlimit.ReasonTotal},
		{"unidentified", connlimit.ReasonUnidentified},
	} {
		ch <- prometheus.MustNewConstMetric(m.refused, prometheus.CounterValue, float64(st.Refused[r.reason]), r.label)
	}
}
