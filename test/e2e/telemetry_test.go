package e2e

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// spireMetric is one row of testdata/spire-metrics.txt.
type spireMetric struct {
	kind   string // call, counter, gauge, sample, latency
	name   string // as Prometheus exposes it
	labels []string
}

// loadSPIREMetrics reads the table taken from SPIRE's telemetry document.
func loadSPIREMetrics(t *testing.T) map[string]spireMetric {
	t.Helper()
	f, err := os.Open("testdata/spire-metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make(map[string]spireMetric)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		m := spireMetric{kind: fs[0], name: fs[1]}
		if len(fs) > 2 {
			m.labels = strings.Split(fs[2], ",")
		}
		out[m.name] = m
	}
	return out
}

// ours are the families this project adds, with its own names; anything
// else under spire_server_ or spire_agent_ must be SPIRE's.
var ours = regexp.MustCompile(`^spire_(server|agent)_(` +
	// go-metrics' runtime statistics, which SPIRE's sinks get too (its
	// DefaultConfig enables them) though its document does not list them.
	`runtime_.*|` +
	// SPIRE's datastore wrapper emits these; its document omits them.
	`datastore_ca_journal_.*|datastore_federation_relationship_.*|` +
	// SPIRE's KeyManager wrapper emits these; its document lists the
	// names of an older interface (generate_key_pair, ...), which the
	// agent emits too.
	`agent_key_manager_(generate_key|get_keys?)(_elapsed_time)?|` +
	// Ours: listener caps, the Workload API socket, the eBPF lineage
	// tracer, metrics of external plugins.
	`tcp_connections.*|workload_api_socket_.*|workload_api_connections_refused_total|lineage_.*)$`)

// families parses the # TYPE lines of an exposition, and the label names
// each family's samples carry.
func families(exposition string) (types map[string]string, labels map[string]map[string]bool) {
	types, labels = make(map[string]string), make(map[string]map[string]bool)
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if f := strings.Fields(rest); len(f) == 2 {
				types[f[0]] = f[1]
			}
			continue
		}
		if m := sample.FindStringSubmatch(line); m != nil {
			// A summary's _sum and _count samples belong to it; a family
			// whose own name ends in _count (datastore_bundle_count) does
			// not lose its suffix, as its # TYPE line names it.
			name := m[1]
			if _, ok := types[name]; !ok {
				name = strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
			}
			if labels[name] == nil {
				labels[name] = make(map[string]bool)
			}
			for _, l := range label.FindAllStringSubmatch(m[2], -1) {
				labels[name][l[1]] = true
			}
		}
	}
	return types, labels
}

// inTable reports whether name is a row of the table, the rpc rows being
// patterns.
func inTable(table map[string]spireMetric, name string) (spireMetric, bool) {
	if m, ok := table[name]; ok {
		return m, true
	}
	for _, side := range []string{"spire_server", "spire_agent"} {
		if strings.HasPrefix(name, side+"_rpc_") {
			m, ok := table[side+"_rpc_<service>_<method>"]
			return m, ok
		}
	}
	return spireMetric{}, false
}

// TestSPIREMetricNames: after an agent attests, a workload fetches its
// X.509-SVIDs (one of them short-lived), an entry gets a new revision and
// both local authorities are rotated and the old ones tainted, both
// daemons' /metrics carry SPIRE's families under the names, types and
// labels SPIRE's telemetry document gives (its table is
// testdata/spire-metrics.txt), and every spire_server_/spire_agent_ family
// either is SPIRE's or is one of ours. Restarted on its stored SVID, the
// agent fetches its key.
func TestSPIREMetricNames(t *testing.T) {
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	selector := fmt.Sprintf("unix:uid:%d", os.Getuid())
	workload := s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/workload",
		"-selector", selector)
	// The CA backdates NotBefore by 10 s, so a 12 s TTL is a 22 s life
	// whose half is 1 s after issue: the agent's syncs find it expiring.
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/short",
		"-selector", selector, "-x509SVIDTTL", "12")
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, telemetry: true, workloadAttestor: unixAttestor("")})
	a.start(t, token)
	eventually(t, 30*time.Second, "both SVIDs for the workload", func() error {
		r := cli(t, a.dir, "spire-agent", "api", "fetch", "x509", "-socketPath", a.socket)
		if r.code != 0 || !strings.Contains(r.stdout, "spiffe://example.org/short") || !strings.Contains(r.stdout, "spiffe://example.org/workload") {
			return errString(r.stdout + r.stderr)
		}
		return nil
	})
	// A new revision of the entry makes its SVID outdated.
	s.cli(t, "entry", "update", "-entryID", workload, "-parentID", "spiffe://example.org/node",
		"-spiffeID", "spiffe://example.org/workload", "-selector", selector, "-dns", "workload.example.org")
	// A forced rotation: the agent processes the tainted authorities.
	for _, kind := range []string{"x509", "jwt"} {
		old, _, _ := authorityIDs(t, s.cli(t, "localauthority", kind, "show"))
		s.cli(t, "localauthority", kind, "activate", "-authorityID", oneID(t, s.cli(t, "localauthority", kind, "prepare")))
		s.cli(t, "localauthority", kind, "taint", "-authorityID", old)
	}

	s.cli(t, "bundle", "count") // CountBundles counts in the datastore
	table := loadSPIREMetrics(t)
	check := func(side string, port int, required []string) {
		t.Helper()
		var types map[string]string
		var labels map[string]map[string]bool
		// A sync may land between scrapes; what is asserted only grows.
		eventually(t, 20*time.Second, side+" metrics", func() error {
			types, labels = families(scrape(t, port))
			for _, r := range required {
				if _, ok := types[r]; !ok {
					return errString("no " + r)
				}
			}
			return nil
		})
		for _, r := range required {
			row, ok := inTable(table, r)
			if !ok {
				t.Errorf("%s: %s is not in SPIRE's table", side, r)
				continue
			}
			want := map[string]string{"call": "counter", "counter": "counter", "gauge": "gauge", "sample": "summary"}[row.kind]
			if types[r] != want {
				t.Errorf("%s: %s is a %s, SPIRE's is a %s (%s)", side, r, types[r], want, row.kind)
			}
			wantLabels := append([]string{"host"}, row.labels...)
			if row.kind == "call" {
				wantLabels = append(wantLabels, "status")
				if types[r+"_elapsed_time"] != "summary" {
					t.Errorf("%s: call counter %s has no %s_elapsed_time summary", side, r, r)
				}
			}
			for _, l := range wantLabels {
				if !labels[r][l] {
					t.Errorf("%s: %s lacks label %s (has %v)", side, r, l, labels[r])
				}
			}
		}
		for name := range types {
			if !strings.HasPrefix(name, "spire_server_") && !strings.HasPrefix(name, "spire_agent_") {
				continue
			}
			base := strings.TrimSuffix(name, "_elapsed_time")
			if row, ok := inTable(table, base); ok && (base == name || row.kind == "call" || row.kind == "latency") {
				continue
			}
			if !ours.MatchString(name) {
				t.Errorf("%s: %s is neither SPIRE's (testdata/spire-metrics.txt) nor one of ours", side, name)
			}
		}
	}
	for _, side := range []struct {
		name     string
		port     int
		required []string
	}{
		{"server", s.metricsPort, []string{
			"spire_server_rpc_agent_v1_agent_attest_agent",
			"spire_server_rpc_agent_v1_agent_create_join_token",
			"spire_server_rpc_entry_v1_entry_batch_create_entry",
			"spire_server_rpc_svid_v1_svid_batch_new_x509svid",
			"spire_server_datastore_node_create",
			"spire_server_datastore_join_token_create",
			"spire_server_datastore_registration_entry_create",
			"spire_server_datastore_bundle_fetch",
			"spire_server_ca_manager_x509_ca_prepare",
			"spire_server_ca_manager_jwt_key_prepare",
			"spire_server_ca_manager_bundle_prune",
			"spire_server_server_ca_sign_x509_svid",
			"spire_server_svid_rotate",
			"spire_server_started",
			"spire_server_uptime_in_ms",
			"spire_server_entry_cache_reload",
			"spire_server_registration_entry_manager_prune",
			"spire_server_datastore_registration_entry_prune",
			"spire_server_datastore_bundle_count",
		}},
		{"agent", a.metricsPort, []string{
			"spire_agent_rpc_workload_api_fetch_x509svid",
			"spire_agent_node_attestor_new_svid",
			"spire_agent_manager_sync_fetch_entries_updates",
			"spire_agent_manager_sync_fetch_svids_updates",
			"spire_agent_workload_api_connection",
			"spire_agent_workload_api_connections",
			"spire_agent_workload_api_workload_attestation",
			"spire_agent_workload_api_workload_attestor",
			"spire_agent_workload_api_discovered_selectors",
			"spire_agent_started",
			"spire_agent_uptime_in_ms",
			"spire_agent_agent_key_manager_generate_key_pair",
			"spire_agent_agent_key_manager_store_private_key",
			"spire_agent_lru_cache_entry_add",
			"spire_agent_lru_cache_entry_update",
			"spire_agent_lru_cache_entry_remove",
			"spire_agent_lru_cache_record_map_size",
			"spire_agent_lru_cache_svid_map_size",
			"spire_agent_cache_manager_expiring_svids",
			"spire_agent_cache_manager_outdated_svids",
			"spire_agent_cache_manager_workload_process_tainted_x509_svids",
			"spire_agent_cache_manager_svid_store_process_tainted_x509_svids",
			"spire_agent_cache_manager_workload_process_tainted_jwt_svids",
			"spire_agent_cache_manager_tainted_x509_svids_workload",
			"spire_agent_cache_manager_tainted_jwt_svids_workload",
		}},
	} {
		check(side.name, side.port, side.required)
	}

	// The agent's InMem sink dumps what it holds to the log on SIGUSR1,
	// under statsd-style names. go-metrics leaves out the interval still
	// being aggregated (1 s), so the signal is sent until the fetch's
	// interval has closed.
	eventually(t, 10*time.Second, "the InMem dump", func() error {
		if err := syscall.Kill(a.proc.Pid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		if out := a.proc.out.String(); !strings.Contains(out, "spire_agent.rpc.workload_api.fetch_x509svid") || !strings.Contains(out, "subsystem=telemetry_inmem") {
			return errString("no InMem dump in the agent log")
		}
		return nil
	})

	// Restarted on its stored SVID, the agent fetches its key (and still
	// emits nothing but SPIRE's families and ours).
	a.proc.Stop()
	a.start(t, "")
	check("restarted agent", a.metricsPort, []string{"spire_agent_agent_key_manager_fetch_private_key"})
}
