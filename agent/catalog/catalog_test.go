package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/catalog"
	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	pcatalog "github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// table is a catalog table with its value type erased, so one loop covers
// every table.
type table struct {
	Type     string
	Names    []string
	External bool
	Build    func(context.Context, hclconf.Plugin, catalog.Deps) (any, error)
}

func erase[T any](t pcatalog.Table[catalog.Deps, T]) table {
	return table{Type: t.Type, Names: t.Names(), External: t.External != nil,
		Build: func(ctx context.Context, p hclconf.Plugin, d catalog.Deps) (any, error) { return t.Build(ctx, p, d) }}
}

func tables() []table {
	return []table{erase(catalog.KeyManagers), erase(catalog.NodeAttestors), erase(catalog.WorkloadAttestors), erase(catalog.SVIDStores)}
}

// wantNames are the built-ins in the order the "supported" lists showed
// them before the catalog existed.
var wantNames = map[string][]string{
	config.TypeKeyManager:       {"memory", "disk", "tpm"},
	config.TypeNodeAttestor:     {"join_token", "tpm", "aws_iid", "azure_msi", "gcp_iit", "k8s_psat", "x509pop", "sshpop", "tpm_devid"},
	config.TypeWorkloadAttestor: {"unix", "lineage", "docker", "k8s", "systemd"},
	// SPIRE's built-in SVID stores are cloud secret managers; only
	// external ones load here.
	config.TypeSVIDStore: {},
}

// withoutTable are the plugin types agent/config accepts that the agent
// does not build yet; their rules have no minimum.
var withoutTable []string

// requiredPlugins are the plugins every configuration must enable.
var requiredPlugins = map[string]string{
	config.TypeKeyManager:       `KeyManager "memory" {}`,
	config.TypeNodeAttestor:     `NodeAttestor "join_token" {}`,
	config.TypeWorkloadAttestor: `WorkloadAttestor "unix" {}`,
}

const agentBlock = "agent {\n    data_dir = %q\n    server_address = \"spire-server\"\n    trust_domain = \"example.org\"\n    insecure_bootstrap = true\n    join_token = \"the-token\"\n}\n"

// parse parses an agent configuration whose plugins block holds blocks
// from line 9 on, followed by the required plugins of other types.
func parse(t *testing.T, typ string, blocks ...string) *config.Config {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, agentBlock+"plugins {\n", t.TempDir())
	for _, block := range blocks {
		b.WriteString("    " + block + "\n")
	}
	for _, rt := range []string{config.TypeKeyManager, config.TypeNodeAttestor, config.TypeWorkloadAttestor} {
		if rt != typ {
			b.WriteString("    " + requiredPlugins[rt] + "\n")
		}
	}
	b.WriteString("}\n")
	cfg, err := config.Parse("agent.conf", []byte(b.String()), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", b.String(), err)
	}
	return cfg
}

func deps(cfg *config.Config) catalog.Deps {
	return catalog.Deps{Config: cfg, Log: slog.New(slog.DiscardHandler)}
}

// build builds the one enabled plugin of typ from a configuration holding
// block at line 9.
func build(t *testing.T, typ, block string) (any, error) {
	t.Helper()
	cfg := parse(t, typ, block)
	for _, tb := range tables() {
		if tb.Type == typ {
			return tb.Build(context.Background(), cfg.EnabledPlugins(typ)[0], deps(cfg))
		}
	}
	t.Fatalf("no table for %s", typ)
	return nil, nil
}

// ruleTypes are the plugin types agent/config's rules accept, read from
// the error about a type it does not know, which lists them: the rules
// themselves are unexported.
func ruleTypes(t *testing.T) []string {
	t.Helper()
	_, err := config.Parse("agent.conf", []byte(fmt.Sprintf(agentBlock, "d")+"plugins {\n    Zzzzzzzzzz \"x\" {}\n}\n"), false)
	const lead, tail = "unknown plugin type (use one of ", ")"
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	i := strings.Index(msg, lead)
	if i < 0 {
		t.Fatalf("no list of plugin types in %q", msg)
	}
	list := msg[i+len(lead):]
	list = list[:strings.Index(list, tail)]
	return strings.Split(list, ", ")
}

func TestTablesCoverRules(t *testing.T) {
	rules := ruleTypes(t)
	var covered []string
	for _, tb := range tables() {
		if !slices.Contains(rules, tb.Type) {
			t.Errorf("table %s has no rule in agent/config", tb.Type)
		}
		covered = append(covered, tb.Type)
	}
	covered = append(covered, withoutTable...)
	slices.Sort(covered)
	slices.Sort(rules)
	if !slices.Equal(covered, rules) {
		t.Fatalf("plugin types with a table or listed in withoutTable: %q; agent/config rules: %q", covered, rules)
	}
}

func TestNames(t *testing.T) {
	for _, tb := range tables() {
		if want := wantNames[tb.Type]; !slices.Equal(tb.Names, want) {
			t.Errorf("%s built-ins %q, want %q", tb.Type, tb.Names, want)
		}
	}
}

// TestEveryBuiltinReachable builds every row with a key no plugin has: the
// error must come from that row's own plugin_data decoding, which proves
// the name reaches the row.
func TestEveryBuiltinReachable(t *testing.T) {
	for _, tb := range tables() {
		for _, name := range tb.Names {
			t.Run(tb.Type+"/"+name, func(t *testing.T) {
				_, err := build(t, tb.Type, fmt.Sprintf("%s %q { plugin_data { no_such_key = 1 } }", tb.Type, name))
				var ce *hclconf.Error
				if !errors.As(err, &ce) || ce.Key != fmt.Sprintf("%s %q.plugin_data.no_such_key", tb.Type, name) || ce.Line != 9 {
					t.Fatalf("error %v (%+v), want an unknown key at line 9", err, ce)
				}
			})
		}
	}
}

func TestUnknownAndExternal(t *testing.T) {
	for _, tb := range tables() {
		t.Run(tb.Type, func(t *testing.T) {
			_, err := build(t, tb.Type, tb.Type+` "nope" {}`)
			why := "supported: " + strings.Join(wantNames[tb.Type], ", ")
			if len(tb.Names) == 0 {
				why = "none is built in; set plugin_cmd to load an external one"
			}
			want := fmt.Sprintf("agent.conf:9: %s \"nope\": unknown %s plugin \"nope\" (%s)", tb.Type, tb.Type, why)
			if err == nil || err.Error() != want {
				t.Fatalf("unknown name:\n got %v\nwant %s", err, want)
			}
			if tb.External {
				return // the loader's own tests cover it
			}
			_, err = build(t, tb.Type, fmt.Sprintf("%s %q { plugin_cmd = \"/bin/false\" }", tb.Type, tb.Names[0]))
			want = fmt.Sprintf("agent.conf:9: %s %q: external %s plugins (plugin_cmd) are not supported", tb.Type, tb.Names[0], tb.Type)
			if err == nil || err.Error() != want {
				t.Fatalf("plugin_cmd:\n got %v\nwant %s", err, want)
			}
		})
	}
}

// TestBuiltins builds the rows that need no hardware or cloud, and checks
// the errors they gave before the catalog existed.
func TestBuiltins(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, typ, block string
		want             string // the Go type built
		err              string // the whole error, when one is expected
		errPrefix        string // or its start, when the rest is another package's
	}{
		{name: "memory", typ: config.TypeKeyManager, block: `KeyManager "memory" {}`, want: "*memory.KeyManager"},
		{name: "disk", typ: config.TypeKeyManager, block: fmt.Sprintf(`KeyManager "disk" { plugin_data { directory = %q } }`, dir),
			want: "*disk.KeyManager"},
		{name: "disk without directory", typ: config.TypeKeyManager, block: `KeyManager "disk" { plugin_data {} }`,
			err: `agent.conf:9: KeyManager "disk".plugin_data.directory: is required`},
		{name: "disk unusable directory", typ: config.TypeKeyManager,
			block: fmt.Sprintf(`KeyManager "disk" { plugin_data { directory = %q } }`, filepath.Join("/proc/self/no", "such")), errPrefix: `agent: KeyManager "disk": `},
		{name: "join_token", typ: config.TypeNodeAttestor, block: `NodeAttestor "join_token" {}`, want: "*jointoken.Attestor"},
		// A collector's constructor error points at its block.
		{name: "x509pop without files", typ: config.TypeNodeAttestor, block: `NodeAttestor "x509pop" {}`,
			errPrefix: `agent.conf:9: NodeAttestor "x509pop": `},
		{name: "sshpop without files", typ: config.TypeNodeAttestor, block: `NodeAttestor "sshpop" {}`,
			errPrefix: `agent.conf:9: NodeAttestor "sshpop": `},
		{name: "unix", typ: config.TypeWorkloadAttestor, block: `WorkloadAttestor "unix" { plugin_data { discover_workload_path = true } }`,
			want: "*unix.Attestor"},
		{name: "lineage without eBPF", typ: config.TypeWorkloadAttestor,
			block: `WorkloadAttestor "lineage" { plugin_data { disable_ebpf = true grace_period = "2s" } }`, want: "*lineage.Attestor"},
		{name: "systemd", typ: config.TypeWorkloadAttestor, block: `WorkloadAttestor "systemd" {}`, want: "*systemd.Attestor"},
		{name: "lineage bad grace_period", typ: config.TypeWorkloadAttestor,
			block:     `WorkloadAttestor "lineage" { plugin_data { disable_ebpf = true grace_period = "soon" } }`,
			errPrefix: `agent.conf:9: WorkloadAttestor "lineage".plugin_data.grace_period: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := build(t, tc.typ, tc.block)
			switch {
			case tc.want != "":
				if err != nil {
					t.Fatalf("build: %v", err)
				}
				if err := pcatalog.Close(v); err != nil {
					t.Errorf("close: %v", err)
				}
				if got := fmt.Sprintf("%T", v); got != tc.want {
					t.Fatalf("built %s, want %s", got, tc.want)
				}
			case tc.err != "":
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error:\n got %v\nwant %s", err, tc.err)
				}
			default:
				if err == nil || !strings.HasPrefix(err.Error(), tc.errPrefix) || len(err.Error()) == len(tc.errPrefix) {
					t.Fatalf("error %v, want one starting %q", err, tc.errPrefix)
				}
			}
		})
	}
}

// TestJoinTokenFromAgentBlock: the token comes from the agent block, not
// from plugin_data, so the attestation data carries it.
func TestJoinTokenFromAgentBlock(t *testing.T) {
	v, err := build(t, config.TypeNodeAttestor, `NodeAttestor "join_token" {}`)
	if err != nil {
		t.Fatal(err)
	}
	na := v.(nodeattestor.Attestor)
	data, err := na.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if na.Type() != "join_token" || !strings.Contains(string(data), "the-token") {
		t.Fatalf("join_token attestor %q sends %q, want the token of the agent block", na.Type(), data)
	}
}

// TestWorkloadAttestorsInOrder: the Workload API asks the attestors in file
// order, so BuildAll keeps it.
func TestWorkloadAttestorsInOrder(t *testing.T) {
	cfg := parse(t, config.TypeWorkloadAttestor,
		`WorkloadAttestor "lineage" { plugin_data { disable_ebpf = true } }`,
		`WorkloadAttestor "unix" {}`)
	as, err := catalog.WorkloadAttestors.BuildAll(context.Background(), cfg.EnabledPlugins(config.TypeWorkloadAttestor), deps(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer pcatalog.Close(as...)
	var got []string
	for _, a := range as {
		got = append(got, fmt.Sprintf("%T", a))
	}
	if want := []string{"*lineage.Attestor", "*unix.Attestor"}; !slices.Equal(got, want) {
		t.Fatalf("built %q, want %q", got, want)
	}
}
