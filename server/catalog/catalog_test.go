package catalog_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	pcatalog "github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/catalog"
	"github.com/spiffe-hw/spire-hw/server/config"
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
	return []table{erase(catalog.DataStores), erase(catalog.KeyManagers), erase(catalog.UpstreamAuthorities), erase(catalog.NodeAttestors),
		erase(catalog.Notifiers), erase(catalog.BundlePublishers), erase(catalog.CredentialComposers)}
}

// wantNames are the built-ins in the order the "supported" lists showed
// them before the catalog existed.
var wantNames = map[string][]string{
	config.TypeDataStore:         {"sql"},
	config.TypeKeyManager:        {"memory", "disk", "pkcs11"},
	config.TypeUpstreamAuthority: {"disk", "pkcs11"},
	config.TypeNodeAttestor:      {"join_token", "tpm", "aws_iid", "azure_msi", "gcp_iit", "k8s_psat", "x509pop", "sshpop", "tpm_devid"},
	// SPIRE's built-in notifiers and bundle publishers talk to clouds and
	// Kubernetes, and its one built-in credential composer (uniqueid) is
	// not compiled in; only external ones load here.
	config.TypeNotifier:           {},
	config.TypeBundlePublisher:    {},
	config.TypeCredentialComposer: {},
}

// withoutTable are the plugin types server/config accepts that the server
// does not build yet; a configuration may only leave them out or disable
// them, since their rules have no minimum.
var withoutTable []string

// requiredPlugins are the plugins every configuration must enable.
var requiredPlugins = map[string]string{
	config.TypeDataStore:    `DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "x" } }`,
	config.TypeKeyManager:   `KeyManager "memory" {}`,
	config.TypeNodeAttestor: `NodeAttestor "join_token" {}`,
}

// parse parses a server configuration whose plugins block holds block at
// line 6, followed by the required plugins of other types.
func parse(t *testing.T, typ, block string) *config.Config {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "server {\n    trust_domain = \"example.org\"\n    data_dir = %q\n}\nplugins {\n    %s\n", t.TempDir(), block)
	for _, rt := range []string{config.TypeDataStore, config.TypeKeyManager, config.TypeNodeAttestor} {
		if rt != typ {
			b.WriteString("    " + requiredPlugins[rt] + "\n")
		}
	}
	b.WriteString("}\n")
	cfg, err := config.Parse("server.conf", []byte(b.String()), false)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", b.String(), err)
	}
	return cfg
}

// build builds the one enabled plugin of typ from a configuration holding
// block.
func build(t *testing.T, typ, block string) (any, error) {
	t.Helper()
	cfg := parse(t, typ, block)
	for _, tb := range tables() {
		if tb.Type == typ {
			return tb.Build(context.Background(), cfg.EnabledPlugins(typ)[0], catalog.Deps{Config: cfg, Log: slog.New(slog.DiscardHandler)})
		}
	}
	t.Fatalf("no table for %s", typ)
	return nil, nil
}

// ruleTypes are the plugin types server/config's rules accept, read from
// the error about a type it does not know, which lists them: the rules
// themselves are unexported.
func ruleTypes(t *testing.T) []string {
	t.Helper()
	_, err := config.Parse("server.conf", []byte("server {\n    trust_domain = \"example.org\"\n    data_dir = \"d\"\n}\nplugins {\n    Zzzzzzzzzz \"x\" {}\n}\n"), false)
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
			t.Errorf("table %s has no rule in server/config", tb.Type)
		}
		covered = append(covered, tb.Type)
	}
	covered = append(covered, withoutTable...)
	slices.Sort(covered)
	slices.Sort(rules)
	if !slices.Equal(covered, rules) {
		t.Fatalf("plugin types with a table or listed in withoutTable: %q; server/config rules: %q", covered, rules)
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
				if !errors.As(err, &ce) || ce.Key != fmt.Sprintf("%s %q.plugin_data.no_such_key", tb.Type, name) || ce.Line != 6 {
					t.Fatalf("error %v (%+v), want an unknown key at line 6", err, ce)
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
			switch {
			case len(tb.Names) == 0 && tb.External:
				why = "none is built in; set plugin_cmd to load an external one"
			case len(tb.Names) == 0:
				why = fmt.Sprintf("no %s plugin is supported yet", tb.Type)
			}
			want := fmt.Sprintf("server.conf:6: %s \"nope\": unknown %s plugin \"nope\" (%s)", tb.Type, tb.Type, why)
			if err == nil || err.Error() != want {
				t.Fatalf("unknown name:\n got %v\nwant %s", err, want)
			}
			if tb.External {
				return // the loader's own tests cover it
			}
			name := "x"
			if len(tb.Names) > 0 {
				name = tb.Names[0]
			}
			_, err = build(t, tb.Type, fmt.Sprintf("%s %q { plugin_cmd = \"/bin/false\" }", tb.Type, name))
			want = fmt.Sprintf("server.conf:6: %s %q: external %s plugins (plugin_cmd) are not supported", tb.Type, name, tb.Type)
			if err == nil || err.Error() != want {
				t.Fatalf("plugin_cmd:\n got %v\nwant %s", err, want)
			}
		})
	}
}

// closeIt closes what a row built, so a test leaves no open file behind.
func closeIt(t *testing.T, v any) {
	t.Helper()
	if c, ok := v.(interface{ Close() error }); ok {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

// writeCA writes a self-signed ECDSA CA certificate and its SEC 1 key.
func writeCA(t *testing.T) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// TestBuiltins builds the rows that need no hardware, and checks the
// errors they gave before the catalog existed.
func TestBuiltins(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := writeCA(t)
	for _, tc := range []struct {
		name, typ, block string
		want             string // the Go type built
		err              string // the whole error, when one is expected
		errPrefix        string // or its start, when the rest is another package's
	}{
		{name: "sql sqlite3", typ: config.TypeDataStore,
			block: fmt.Sprintf(`DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = %q } }`, filepath.Join(dir, "ds.sqlite3")),
			want:  "*sqlstore.Store"},
		{name: "sql without database_type", typ: config.TypeDataStore, block: `DataStore "sql" { plugin_data { connection_string = "x" } }`,
			err: `server.conf:6: DataStore "sql".plugin_data.database_type: is required (sqlite3, postgres or mysql)`},
		{name: "sql sqlite3 with a root CA", typ: config.TypeDataStore,
			block: fmt.Sprintf(`DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = %q root_ca_path = "ca.pem" } }`, filepath.Join(dir, "ds2.sqlite3")),
			err:   `server.conf:6: DataStore "sql".plugin_data.root_ca_path: is for a database reached over the network; SQLite is a local file (remove the key or use postgres or mysql)`},
		{name: "sql bad conn_max_lifetime", typ: config.TypeDataStore,
			block:     `DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "x" conn_max_lifetime = "soon" } }`,
			errPrefix: `server.conf:6: DataStore "sql".plugin_data.conn_max_lifetime: failed to parse "soon"`},
		{name: "sql every SPIRE key", typ: config.TypeDataStore,
			block: fmt.Sprintf(`DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = %q max_open_conns = 4 max_idle_conns = 2 conn_max_lifetime = "1h" disable_migration = true log_sql = true } }`, filepath.Join(dir, "ds3.sqlite3")),
			want:  "*sqlstore.Store"},
		{name: "sql without connection_string", typ: config.TypeDataStore, block: `DataStore "sql" { plugin_data { database_type = "sqlite3" } }`,
			err: `server.conf:6: DataStore "sql".plugin_data.connection_string: is required`},
		{name: "sql unknown database", typ: config.TypeDataStore, block: `DataStore "sql" { plugin_data { database_type = "oracle" connection_string = "x" } }`,
			errPrefix: "server: "},
		{name: "memory", typ: config.TypeKeyManager, block: `KeyManager "memory" {}`, want: "*memory.KeyManager"},
		{name: "disk", typ: config.TypeKeyManager,
			block: fmt.Sprintf(`KeyManager "disk" { plugin_data { keys_path = %q } }`, filepath.Join(dir, "keys.json")), want: "*disk.KeyManager"},
		{name: "disk without keys_path", typ: config.TypeKeyManager, block: `KeyManager "disk" { plugin_data {} }`,
			err: `server.conf:6: KeyManager "disk".plugin_data.keys_path: is required`},
		{name: "disk unusable keys_path", typ: config.TypeKeyManager,
			block: fmt.Sprintf(`KeyManager "disk" { plugin_data { keys_path = %q } }`, dir), errPrefix: `server: KeyManager "disk": `},
		{name: "upstream disk", typ: config.TypeUpstreamAuthority,
			block: fmt.Sprintf(`UpstreamAuthority "disk" { plugin_data { cert_file_path = %q key_file_path = %q } }`, certPath, keyPath),
			want:  "*upstream.Disk"},
		{name: "upstream disk without key", typ: config.TypeUpstreamAuthority,
			block: fmt.Sprintf(`UpstreamAuthority "disk" { plugin_data { cert_file_path = %q } }`, certPath),
			err:   `server.conf:6: UpstreamAuthority "disk".plugin_data.cert_file_path: cert_file_path and key_file_path are required`},
		{name: "upstream disk key mismatch", typ: config.TypeUpstreamAuthority,
			block:     fmt.Sprintf(`UpstreamAuthority "disk" { plugin_data { cert_file_path = %q key_file_path = %q } }`, certPath, certPath),
			errPrefix: `server: UpstreamAuthority "disk": upstream: disk: key_file_path `},
		{name: "join_token", typ: config.TypeNodeAttestor, block: `NodeAttestor "join_token" {}`, want: "*jointoken.Attestor"},
		// A verifier's constructor error points at its block.
		{name: "x509pop without CA", typ: config.TypeNodeAttestor, block: `NodeAttestor "x509pop" {}`,
			errPrefix: `server.conf:6: NodeAttestor "x509pop": `},
		{name: "sshpop without CA", typ: config.TypeNodeAttestor, block: `NodeAttestor "sshpop" {}`,
			errPrefix: `server.conf:6: NodeAttestor "sshpop": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := build(t, tc.typ, tc.block)
			switch {
			case tc.want != "":
				if err != nil {
					t.Fatalf("build: %v", err)
				}
				closeIt(t, v)
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
