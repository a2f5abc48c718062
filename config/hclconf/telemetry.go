package hclconf

import (
	"strings"

	"github.com/hashicorp/hcl/hcl/ast"
)

// Telemetry is SPIRE's telemetry block (pkg/common/telemetry's FileConfig):
// the sinks metrics go to and the filters applied before any sink sees them.
type Telemetry struct {
	// Prometheus, when set, serves /metrics over HTTP.
	Prometheus *Prometheus
	// DogStatsd, Statsd and M3 may each be declared several times, to send
	// to more than one collector.
	DogStatsd []Address
	Statsd    []Address
	M3        []M3
	// InMem, when set, keeps metrics in memory and writes them to the log
	// on SIGUSR1, as go-metrics' in-memory sink does.
	InMem bool

	// MetricPrefix replaces the service name ("spire_server",
	// "spire_agent") as the first part of every metric name.
	MetricPrefix string
	// EnableTrustDomainLabel adds trust_domain to every labelled metric
	// (default false); EnableHostnameLabel adds host (default true).
	EnableTrustDomainLabel bool
	EnableHostnameLabel    bool
	// AllowedPrefixes, BlockedPrefixes, AllowedLabels and BlockedLabels are
	// go-metrics' filters; prefixes use '.' as the separator.
	AllowedPrefixes, BlockedPrefixes []string
	AllowedLabels, BlockedLabels     []string
}

// Configured reports whether any sink is configured; without one, metrics
// are dropped.
func (t Telemetry) Configured() bool {
	return t.Prometheus != nil || len(t.DogStatsd) > 0 || len(t.Statsd) > 0 || len(t.M3) > 0 || t.InMem
}

// Prometheus is the telemetry Prometheus block.
type Prometheus struct {
	// Host is the address to listen on; SPIRE's default is localhost.
	Host string
	Port int
}

// Address is one DogStatsd or Statsd collector: a UDP host:port.
type Address struct {
	Address string
}

// M3 is one M3 collector.
type M3 struct {
	Address string
	// Env is M3's environment tag, e.g. "production".
	Env string
}

// ParseTelemetry reads the telemetry block of root.
func ParseTelemetry(root *Section) Telemetry {
	t := Telemetry{EnableHostnameLabel: true}
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
	for _, b := range s.blockList("DogStatsd") {
		t.DogStatsd = append(t.DogStatsd, Address{Address: parseAddress(b, "localhost:8125")})
		b.Finish()
	}
	for _, b := range s.blockList("Statsd") {
		t.Statsd = append(t.Statsd, Address{Address: parseAddress(b, "localhost:8125")})
		b.Finish()
	}
	for _, b := range s.blockList("M3") {
		m := M3{Address: parseAddress(b, "localhost:9052")}
		// M3 needs an environment; tally's reporter refuses an empty one.
		if ok := b.String("env", &m.Env); (ok && m.Env == "") || (!ok && !b.Has("env")) {
			b.Errorf("env", `missing (set M3's environment, e.g. env = "prod")`)
		}
		t.M3 = append(t.M3, m)
		b.Finish()
	}
	if b := s.Block("InMem"); b != nil {
		t.InMem = true
		b.Finish()
	}
	s.String("MetricPrefix", &t.MetricPrefix)
	s.Bool("EnableTrustDomainLabel", &t.EnableTrustDomainLabel)
	s.Bool("EnableHostnameLabel", &t.EnableHostnameLabel)
	s.Strings("AllowedPrefixes", &t.AllowedPrefixes)
	s.Strings("BlockedPrefixes", &t.BlockedPrefixes)
	s.Strings("AllowedLabels", &t.AllowedLabels)
	s.Strings("BlockedLabels", &t.BlockedLabels)
	s.Finish()
	return t
}

// parseAddress reads a collector's address, which must be host:port.
func parseAddress(b *Section, example string) string {
	var addr string
	if !b.String("address", &addr) {
		b.Errorf("address", "missing (set the collector's UDP host:port, e.g. address = %q)", example)
		return ""
	}
	if i := strings.LastIndexByte(addr, ':'); i <= 0 || i == len(addr)-1 {
		b.Errorf("address", "%q is not host:port (e.g. %q)", addr, example)
	}
	return addr
}

// blockList returns the bodies of key written as SPIRE's documentation does,
// a list of objects (key = [{ ... }, { ... }]), or as repeated blocks
// (key { ... } key { ... }), which SPIRE's decoder also takes.
func (s *Section) blockList(key string) []*Section {
	s.known = append(s.known, key)
	var out []*Section
	for _, it := range s.items {
		if len(it.Keys) == 0 || !strings.EqualFold(keyText(it.Keys[0].Token), key) {
			continue
		}
		if s.used == nil {
			s.used = make(map[*ast.ObjectItem]bool)
		}
		s.used[it] = true
		line := itemLine(it)
		path := s.Key(key)
		switch v := it.Val.(type) {
		case *ast.ObjectType:
			if len(it.Keys) > 1 {
				s.d.Errorf(line, path, "must not be labelled (write %s = [{ address = \"host:port\" }])", key)
				continue
			}
			out = append(out, &Section{d: s.d, path: path, line: line, items: v.List.Items})
		case *ast.ListType:
			for _, el := range v.List {
				ot, ok := el.(*ast.ObjectType)
				if !ok {
					s.d.Errorf(line, path, "must be a list of blocks (write %s = [{ address = \"host:port\" }])", key)
					continue
				}
				out = append(out, &Section{d: s.d, path: path, line: ot.Pos().Line, items: ot.List.Items})
			}
		default:
			s.d.Errorf(line, path, "must be a list of blocks, not %s (write %s = [{ address = \"host:port\" }])", describe(it), key)
		}
	}
	return out
}
