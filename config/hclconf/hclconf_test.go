package hclconf

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testRules = []PluginRule{
	{Type: "KeyManager", Min: 1, Max: 1, Example: `KeyManager "memory" {}`},
	{Type: "NodeAttestor", Min: 1, Max: -1, Example: `NodeAttestor "join_token" {}`},
	{Type: "Notifier", Min: 0, Max: -1},
}

// parseRoot parses text and returns its top-level section and diagnostics.
func parseRoot(t *testing.T, text string) (*Section, *Diagnostics) {
	t.Helper()
	d := NewDiagnostics("test.conf")
	root := Parse(d, []byte(text), false)
	return root, d
}

// wantErrs asserts that err holds every substring in want.
func wantErrs(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not contain %q", err, w)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "168h", want: 168 * time.Hour},
		{in: " 90s ", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "7d", wantErr: `invalid duration "7d" (use Go duration syntax such as "168h")`},
		{in: "1w", wantErr: `such as "1h30m"`},
		{in: "", wantErr: `invalid duration ""`},
		{in: "3600", wantErr: `invalid duration "3600"`},
	} {
		got, err := ParseDuration(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseDuration(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePortAndLogs(t *testing.T) {
	for in, want := range map[string]int{"8081": 8081, "0": 0, "65535": 65535} {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"-1", "65536", "http", "80a", ""} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "Warn": slog.LevelWarn, "warning": slog.LevelWarn, "ERROR": slog.LevelError} {
		if got, err := ParseLogLevel(in); err != nil || got != want {
			t.Errorf("ParseLogLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLogLevel("TRACE"); err == nil || !strings.Contains(err.Error(), "use DEBUG, INFO, WARN or ERROR") {
		t.Errorf("ParseLogLevel(TRACE) error = %v", err)
	}
	if f, err := ParseLogFormat("JSON"); err != nil || f != LogFormatJSON {
		t.Errorf("ParseLogFormat(JSON) = %q, %v", f, err)
	}
	if _, err := ParseLogFormat("xml"); err == nil {
		t.Error("ParseLogFormat(xml) accepted")
	}
}

func TestSectionValues(t *testing.T) {
	root, d := parseRoot(t, `
s {
  str = "a"
  num_as_str = 42
  port_str = "8081"
  port_num = 9090
  flag = "true"
  list = ["x", "y"]
  single = "z"
  dur = "2m"
  doc = <<EOT
line1
line2
EOT
}
`)
	if root == nil {
		t.Fatal(d.Err())
	}
	s := root.Block("s")
	var str, numStr, doc string
	var p1, p2 int
	var b bool
	var list, single []string
	var dur time.Duration
	s.String("str", &str)
	s.String("num_as_str", &numStr)
	s.Port("port_str", &p1)
	s.Port("port_num", &p2)
	s.Bool("flag", &b)
	s.Strings("list", &list)
	s.Strings("single", &single)
	s.Duration("dur", &dur)
	s.String("doc", &doc)
	if s.String("absent", &str) {
		t.Error("String reported an absent key as present")
	}
	s.Finish()
	root.Finish()
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	if str != "a" || numStr != "42" || p1 != 8081 || p2 != 9090 || !b || dur != 2*time.Minute ||
		strings.Join(list, ",") != "x,y" || strings.Join(single, ",") != "z" || doc != "line1\nline2\n" {
		t.Errorf("got str=%q num=%q ports=%d,%d bool=%v list=%v single=%v dur=%v doc=%q", str, numStr, p1, p2, b, list, single, dur, doc)
	}
}

func TestSectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		read       func(s *Section)
		want       []string
	}{
		{
			name: "unknown key with suggestion",
			text: "s {\n  bind_prot = 1\n}\n",
			read: func(s *Section) { var p int; s.Port("bind_port", &p) },
			want: []string{`test.conf:2: s.bind_prot: unknown key (did you mean "bind_port"?)`},
		},
		{
			name: "unknown key without suggestion",
			text: "s {\n\n  zzzzzzzz = 1\n}\n",
			read: func(s *Section) { var p int; s.Port("bind_port", &p) },
			want: []string{`test.conf:3: s.zzzzzzzz: unknown key (remove it`},
		},
		{
			name: "set twice",
			text: "s {\n  a = \"1\"\n  a = \"2\"\n}\n",
			read: func(s *Section) { var v string; s.String("a", &v) },
			want: []string{`test.conf:3: s.a: set more than once (first at line 2; keep one)`},
		},
		{
			name: "block where a string belongs",
			text: "s {\n  a { }\n}\n",
			read: func(s *Section) { var v string; s.String("a", &v) },
			want: []string{`test.conf:2: s.a: must be a string, not a block`},
		},
		{
			name: "bool where a string belongs",
			text: "s {\n  a = true\n}\n",
			read: func(s *Section) { var v string; s.String("a", &v) },
			want: []string{`s.a: must be a string, not a boolean`},
		},
		{
			name: "bad bool",
			text: "s {\n  a = \"yes please\"\n}\n",
			read: func(s *Section) { var v bool; s.Bool("a", &v) },
			want: []string{`test.conf:2: s.a: invalid boolean "yes please" (use true or false)`},
		},
		{
			name: "negative duration",
			text: "s {\n  a = \"-5m\"\n}\n",
			read: func(s *Section) { var v time.Duration; s.Duration("a", &v) },
			want: []string{`test.conf:2: s.a: must not be negative`},
		},
		{
			name: "list of numbers",
			text: "s {\n  a = [true, false]\n}\n",
			read: func(s *Section) { var v []string; s.Strings("a", &v) },
			want: []string{`s.a: must be a list of strings`},
		},
		{
			name: "scalar where a block belongs",
			text: "s {\n  a = \"x\"\n}\n",
			read: func(s *Section) { s.Block("a") },
			want: []string{`test.conf:2: s.a: must be a block, not a string (write a { ... })`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, d := parseRoot(t, tc.text)
			s := root.Block("s")
			tc.read(s)
			s.Finish()
			wantErrs(t, d.Err(), tc.want...)
		})
	}
}

func TestSyntaxErrorAndJSON(t *testing.T) {
	root, d := parseRoot(t, "server {\n  a = \"x\"\n  b = \n")
	if root != nil {
		t.Fatal("Parse returned a section for a broken file")
	}
	wantErrs(t, d.Err(), "test.conf:", "syntax error")

	root, d = parseRoot(t, `{"server": {"trust_domain": "example.org", "port": 8081}}`)
	if root == nil {
		t.Fatal(d.Err())
	}
	s := root.Block("server")
	var td string
	var port int
	s.String("trust_domain", &td)
	s.Port("port", &port)
	s.Finish()
	if d.HasErrors() || td != "example.org" || port != 8081 {
		t.Errorf("JSON: td=%q port=%d err=%v", td, port, d.Err())
	}
}

func TestExpandEnv(t *testing.T) {
	t.Setenv("HCLCONF_TEST_TD", "example.org")
	d := NewDiagnostics("env.conf")
	root := Parse(d, []byte(`a = "${HCLCONF_TEST_TD}" b = "$HCLCONF_TEST_TD"`), true)
	var a, b string
	root.String("a", &a)
	root.String("b", &b)
	if a != "example.org" || b != "example.org" {
		t.Errorf("expanded a=%q b=%q", a, b)
	}
	d = NewDiagnostics("env.conf")
	root = Parse(d, []byte(`a = "${HCLCONF_TEST_TD}"`), false)
	root.String("a", &a)
	if a != "${HCLCONF_TEST_TD}" {
		t.Errorf("without expandEnv a=%q", a)
	}
}

func TestErrorFormatAndAs(t *testing.T) {
	root, d := parseRoot(t, "s {\n  a = \"1x\"\n}\n")
	var dur time.Duration
	root.Block("s").Duration("a", &dur)
	d.Missing("s.b", "set b in the s block")
	d.FlagErrorf("trustDomain", "bad")
	err := d.Err()
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`test.conf:2: s.a: invalid duration "1x" (use Go duration syntax such as "1h30m")`,
		`test.conf: s.b is required (set b in the s block)`,
		`flag -trustDomain: bad`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
	var e *Error
	if !errors.As(err, &e) || e.File != "test.conf" || e.Line != 2 || e.Key != "s.a" {
		t.Errorf("errors.As: %+v", e)
	}
}

func TestHealthChecks(t *testing.T) {
	root, d := parseRoot(t, "")
	if hc := ParseHealthChecks(root); hc != DefaultHealthChecks() || d.HasErrors() {
		t.Errorf("defaults: %+v %v", hc, d.Err())
	}
	root, d = parseRoot(t, `health_checks {
  listener_enabled = true
  bind_address = "0.0.0.0"
  bind_port = "8080"
  live_path = "/alive"
  ready_path = "/ok"
}`)
	hc := ParseHealthChecks(root)
	want := HealthChecks{ListenerEnabled: true, BindAddress: "0.0.0.0", BindPort: 8080, LivePath: "/alive", ReadyPath: "/ok"}
	if hc != want || d.HasErrors() {
		t.Errorf("got %+v, %v", hc, d.Err())
	}
	root, d = parseRoot(t, "health_checks {\n  live_path = \"live\"\n  bind_port = \"x\"\n  extra = 1\n}")
	ParseHealthChecks(root)
	wantErrs(t, d.Err(),
		`test.conf:2: health_checks.live_path: invalid path "live"`,
		`test.conf:3: health_checks.bind_port: invalid port "x"`,
		`test.conf:4: health_checks.extra: unknown key`)
}

func TestParsePlugins(t *testing.T) {
	root, d := parseRoot(t, `plugins {
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor {
        join_token { }
        x509pop {
            enabled = false
            plugin_cmd = "/opt/x509pop"
            plugin_args = ["-v"]
            plugin_checksum = "0000000000000000000000000000000000000000000000000000000000000000"
        }
    }
    Notifier "k8sbundle" { enabled = false }
}`)
	ps := ParsePlugins(root, testRules)
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Label()+"@"+p.Pos.String())
	}
	want := `KeyManager "memory"@test.conf:2,NodeAttestor "join_token"@test.conf:6,NodeAttestor "x509pop"@test.conf:7,Notifier "k8sbundle"@test.conf:14`
	if strings.Join(got, ",") != want {
		t.Errorf("plugins %s\nwant %s", strings.Join(got, ","), want)
	}
	x := ps[2]
	if x.Enabled || !x.External() || x.Cmd != "/opt/x509pop" || len(x.Args) != 1 || len(x.Checksum) != 64 {
		t.Errorf("x509pop: %+v", x)
	}
	if ps[0].Data == nil || ps[1].Data != nil {
		t.Errorf("Data: memory %v join_token %v", ps[0].Data, ps[1].Data)
	}
	if n := len(EnabledPlugins(ps, "NodeAttestor")); n != 1 {
		t.Errorf("enabled NodeAttestors = %d", n)
	}
}

func TestParsePluginsJSON(t *testing.T) {
	root, d := parseRoot(t, `{"plugins": {
  "KeyManager": [{"memory": {"plugin_data": {}}}],
  "NodeAttestor": [{"join_token": {}}, {"tpm": {"plugin_data": {"ca_path": "/x"}}}],
  "Notifier": [{"n": {"plugin_data": {"nested": {"depth": 2}, "labels": {"a": "b"}}}}]
},
"health_checks": {"h": {"x": 1}}}`)
	ps := ParsePlugins(root, testRules)
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 || ps[2].Name != "tpm" || ps[3].Name != "n" {
		t.Fatalf("plugins: %+v", ps)
	}
	var n diskConfig
	if err := ps[3].DecodeData(&n); err != nil || n.Nested.Depth != 2 || n.Labels["a"] != "b" {
		t.Errorf("flattened JSON plugin_data: %+v %v", n, err)
	}
	// Flattened blocks are rejoined, so unknown keys are still found in them.
	hc := root.Block("health_checks")
	hc.Finish()
	wantErrs(t, d.Err(), "health_checks.h: unknown key")
	var cfg struct {
		CAPath string `hcl:"ca_path"`
	}
	if err := ps[2].DecodeData(&cfg); err != nil || cfg.CAPath != "/x" {
		t.Errorf("DecodeData: %+v %v", cfg, err)
	}
}

func TestParsePluginsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown type", "plugins {\n  KeyManager \"m\" {}\n  NodeAttestor \"j\" {}\n  keymanager \"x\" {}\n}",
			[]string{`test.conf:4: plugins.keymanager: unknown plugin type (did you mean "KeyManager"?)`}},
		{"unknown type list", "plugins {\n  KeyManager \"m\" {}\n  NodeAttestor \"j\" {}\n  Frobnicator \"x\" {}\n}",
			[]string{`plugins.Frobnicator: unknown plugin type (use one of KeyManager, NodeAttestor, Notifier)`}},
		{"missing exactly-one", "plugins {\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:1: plugins: exactly one KeyManager plugin must be enabled, found 0 (add one, e.g. KeyManager "memory" {})`}},
		{"no plugins block", "",
			[]string{`test.conf: plugins: exactly one KeyManager`, `at least one NodeAttestor plugin must be enabled, found 0`}},
		{"two enabled", "plugins {\n  KeyManager \"a\" {}\n  KeyManager \"b\" {}\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:3: plugins: exactly one KeyManager plugin may be enabled, found 2: "a" at line 2, "b" at line 3`}},
		{"only disabled", "plugins {\n  KeyManager \"a\" { enabled = false }\n  NodeAttestor \"j\" {}\n}",
			[]string{`exactly one KeyManager plugin must be enabled, found 0`}},
		{"duplicate", "plugins {\n  KeyManager \"a\" {}\n  NodeAttestor \"j\" {}\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:4: plugins.NodeAttestor "j": declared more than once (first at line 3; keep one)`}},
		{"unknown plugin key", "plugins {\n  KeyManager \"a\" {\n    plugin_dat {}\n  }\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:3: plugins.KeyManager "a".plugin_dat: unknown key (did you mean "plugin_data"?)`}},
		{"data and file", "plugins {\n  KeyManager \"a\" {\n    plugin_data {}\n    plugin_data_file = \"x\"\n  }\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:4: plugins.KeyManager "a".plugin_data_file: plugin_data and plugin_data_file are both set (keep one)`}},
		{"string data", "plugins {\n  KeyManager \"a\" {\n    plugin_data = \"k = 1\"\n  }\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:3: plugins.KeyManager "a".plugin_data: must be a block, not a string`}},
		{"bad checksum", "plugins {\n  KeyManager \"a\" {\n    plugin_cmd = \"/x\"\n    plugin_checksum = \"abc\"\n  }\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:4: plugins.KeyManager "a".plugin_checksum: invalid checksum "abc"`}},
		{"checksum without cmd", "plugins {\n  KeyManager \"a\" {\n    plugin_checksum = \"" + strings.Repeat("ab", 32) + "\"\n  }\n  NodeAttestor \"j\" {}\n}",
			[]string{`plugin_checksum: set without plugin_cmd`}},
		{"bad enabled", "plugins {\n  KeyManager \"a\" {\n    enabled = \"maybe\"\n  }\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:3: plugins.KeyManager "a".enabled: invalid boolean "maybe"`}},
		{"not a block", "plugins {\n  KeyManager = \"a\"\n  NodeAttestor \"j\" {}\n}",
			[]string{`test.conf:2: plugins.KeyManager: must be a named block`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, d := parseRoot(t, tc.text)
			if root == nil {
				t.Fatal(d.Err())
			}
			ParsePlugins(root, testRules)
			wantErrs(t, d.Err(), tc.want...)
		})
	}
}

type diskConfig struct {
	KeysPath    string   `hcl:"keys_path"`
	RotateEvery string   `hcl:"rotate_every"`
	Tags        []string `hcl:"tags"`
	Nested      struct {
		Depth int `hcl:"depth"`
	} `hcl:"nested"`
	Servers []struct {
		Addr string `hcl:"addr"`
	} `hcl:"server"`
	Labels  map[string]string `hcl:"labels"`
	Ignored string            `hcl:"-"`
}

func onePlugin(t *testing.T, text string) Plugin {
	t.Helper()
	root, d := parseRoot(t, text)
	if root == nil {
		t.Fatal(d.Err())
	}
	ps := ParsePlugins(root, []PluginRule{{Type: "KeyManager", Min: 0, Max: -1}})
	if d.HasErrors() || len(ps) != 1 {
		t.Fatalf("plugins %v: %v", ps, d.Err())
	}
	return ps[0]
}

func TestDecodeData(t *testing.T) {
	p := onePlugin(t, `plugins {
  KeyManager "disk" {
    plugin_data {
      keys_path = "/var/keys.json"
      rotate_every = "12h"
      tags = ["a", "b"]
      nested { depth = 3 }
      server { addr = "x:1" }
      server { addr = "y:2" }
      labels { any = "thing" }
    }
  }
}`)
	var cfg diskConfig
	if err := p.DecodeData(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.KeysPath != "/var/keys.json" || cfg.Nested.Depth != 3 || len(cfg.Servers) != 2 || cfg.Servers[1].Addr != "y:2" ||
		cfg.Labels["any"] != "thing" || len(cfg.Tags) != 2 {
		t.Errorf("decoded %+v", cfg)
	}
	if d, err := p.ParseDuration("rotate_every", cfg.RotateEvery); err != nil || d != 12*time.Hour {
		t.Errorf("ParseDuration = %v, %v", d, err)
	}

	// DataText is what an external plugin receives: it must decode the same.
	text, err := p.DataText()
	if err != nil {
		t.Fatal(err)
	}
	root, d := parseRoot(t, "plugins {\n KeyManager \"disk\" {\n plugin_data {\n"+text+"\n}\n}\n}")
	if root == nil {
		t.Fatalf("DataText output does not parse: %v\n%s", d.Err(), text)
	}
	again := ParsePlugins(root, []PluginRule{{Type: "KeyManager", Max: -1}})
	var cfg2 diskConfig
	if err := again[0].DecodeData(&cfg2); err != nil || cfg2.KeysPath != cfg.KeysPath || len(cfg2.Servers) != 2 {
		t.Errorf("DataText round trip: %+v %v", cfg2, err)
	}
}

func TestDecodeDataErrors(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       []string
	}{
		{"unknown top key", "keys_path = \"x\"\nkey_path = \"y\"",
			[]string{`test.conf:6: KeyManager "disk".plugin_data.key_path: unknown key (did you mean "keys_path"?)`}},
		{"unknown nested key", "nested {\n  depht = 1\n}",
			[]string{`test.conf:6: KeyManager "disk".plugin_data.nested.depht: unknown key (did you mean "depth"?)`}},
		{"unknown key in repeated block", "server { addr = \"x\" }\nserver { port = 1 }",
			[]string{`test.conf:6: KeyManager "disk".plugin_data.server.port: unknown key (known keys: addr)`}},
		{"unknown far key lists known ones", "zzzzzzzzzz = 1",
			[]string{`unknown key (known keys: keys_path, rotate_every, tags, nested, server, labels)`}},
		{"tagged dash is not a key", "Ignored = \"x\"",
			[]string{`plugin_data.Ignored: unknown key`}},
		{"wrong type", "\n\nnested = \"deep\"",
			[]string{`test.conf:7: KeyManager "disk".plugin_data: nested:`, `check the value types`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := onePlugin(t, "plugins {\n  KeyManager \"disk\" {\n    plugin_data {\n"+"\n"+tc.data+"\n    }\n  }\n}")
			var cfg diskConfig
			wantErrs(t, p.DecodeData(&cfg), tc.want...)
		})
	}

	p := onePlugin(t, "plugins {\n  KeyManager \"disk\" {\n    plugin_data {\n      rotate_every = \"2d\"\n    }\n  }\n}")
	var cfg diskConfig
	if err := p.DecodeData(&cfg); err != nil {
		t.Fatal(err)
	}
	_, err := p.ParseDuration("rotate_every", cfg.RotateEvery)
	wantErrs(t, err, `test.conf:4: KeyManager "disk".plugin_data.rotate_every: invalid duration "2d" (use Go duration syntax such as "48h")`)
	if err := p.DecodeData(cfg); err == nil {
		t.Error("DecodeData accepted a non-pointer")
	}
}

func TestDecodeDataFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.hcl")
	if err := os.WriteFile(file, []byte("keys_path = \"/k\"\n\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := onePlugin(t, "plugins {\n  KeyManager \"disk\" {\n    plugin_data_file = \""+file+"\"\n  }\n}")
	var cfg diskConfig
	wantErrs(t, p.DecodeData(&cfg), file+`:3: KeyManager "disk".plugin_data.bogus: unknown key`)

	if err := os.WriteFile(file, []byte("keys_path = \"/k\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.DecodeData(&cfg); err != nil || cfg.KeysPath != "/k" {
		t.Errorf("DecodeData from file: %+v %v", cfg, err)
	}
	if text, err := p.DataText(); err != nil || text != "keys_path = \"/k\"\n" {
		t.Errorf("DataText = %q, %v", text, err)
	}

	missing := onePlugin(t, "plugins {\n  KeyManager \"disk\" {\n    plugin_data_file = \"/nonexistent/x.hcl\"\n  }\n}")
	wantErrs(t, missing.DecodeData(&cfg), `test.conf:2: KeyManager "disk": cannot read plugin_data_file`)
}

func TestDecodeDataAbsent(t *testing.T) {
	p := onePlugin(t, "plugins {\n  KeyManager \"memory\" {}\n}")
	cfg := diskConfig{KeysPath: "keep"}
	if err := p.DecodeData(&cfg); err != nil || cfg.KeysPath != "keep" {
		t.Errorf("DecodeData without data: %+v %v", cfg, err)
	}
	if text, err := p.DataText(); err != nil || text != "" {
		t.Errorf("DataText = %q, %v", text, err)
	}
}
