package lineage

import "github.com/prometheus/client_golang/prometheus"

// Collector exposes a tracer's health to Prometheus. Register it with the
// agent's registry: a non-zero drop count means the kernel produced events
// faster than the agent read them, and the table may be wrong.
type Collector struct {
	t                              *Tracer
	drops, events, size, overflows *prometheus.Desc
}

// NewCollector returns a Collector for t.
func NewCollector(t *Tracer) *Collector {
	return &Collector{
		t: t,
		drops: prometheus.NewDesc("spire_agent_lineage_ringbuf_drops_total",
			"Events the kernel could not put in the lineage ring buffer because it was full.", nil, nil),
		events: prometheus.NewDesc("spire_agent_lineage_events_total",
			"Fork, exec, exit and cgroup events applied to the process-lineage table.", nil, nil),
		size: prometheus.NewDesc("spire_agent_lineage_table_processes",
			"Processes in the lineage table, live and exited within the grace period.", nil, nil),
		overflows: prometheus.NewDesc("spire_agent_lineage_table_overflows_total",
			"Processes not added because the lineage table was full of live processes.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.drops
	ch <- c.events
	ch <- c.size
	ch <- c.overflows
}

// Collect implements prometheus.Collector. Every value is read when scraped,
// so the tracer's hot paths carry no metric bookkeeping.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(c.t.Drops()))
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(c.t.Events()))
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(c.t.table.Len()))
	ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(c.t.table.Overflows()))
}
