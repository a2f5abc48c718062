package hclconf

// Telemetry is SPIRE's telemetry block. Of its sinks only Prometheus is
// implemented; the others are accepted with a warning, so that a SPIRE
// configuration still starts.
type Telemetry struct {
	// Prometheus, when set, serves /metrics over HTTP.
	Prometheus *Prometheus
}

// Prometheus is the telemetry Prometheus block.
type Prometheus struct {
	// Host is the address to listen on; SPIRE's default is localhost.
	Host string
	Port int
}

// ParseTelemetry reads the telemetry block of root.
func ParseTelemetry(root *Section) Telemetry {
	var t Telemetry
	s := root.Block("telemetry")
	if s == nil {
		return t
	}
	if p := s.Block("Prometheus"); p != nil {
		t.Prometheus = &Prometheus{Host: "localhost"}
		p.String("host", &t.Prometheus.Host)
		if !p.Port("port", &t.Prometheus.Port) && !p.Has("port") {
			p.Errorf("port", "missing (set the port Prometheus scrapes, e.g. port = 9988)")
		}
		p.Finish()
	}
	for _, k := range []string{"DogStatsd", "Statsd", "M3", "InMem", "AllowedPrefixes", "BlockedPrefixes",
		"AllowedLabels", "BlockedLabels", "EnableHostnameLabel", "MetricPrefix"} {
		s.Ignore(k)
	}
	s.Finish()
	return t
}
