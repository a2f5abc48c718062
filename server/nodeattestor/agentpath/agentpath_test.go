package agentpath

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/adler32"
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// TestSPIREFunctions: exactly SPIRE's functions, and nothing sprig has
// beyond them (env, now, randAlpha...), which would make one node's ID
// differ between servers or runs.
func TestSPIREFunctions(t *testing.T) {
	if len(funcs) != 118 {
		t.Errorf("%d functions, want SPIRE v1.13.3's 118", len(funcs))
	}
	for _, name := range []string{"snakecase", "wrapWith", "urlJoin", "uuidv4"} {
		if _, ok := funcs[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	for _, name := range []string{"env", "expandenv", "now", "randAlpha", "genPrivateKey"} {
		if _, err := Parse("x509pop", "/{{ "+name+" }}"); err == nil || !strings.Contains(err.Error(), "not defined") {
			t.Errorf("%s: %v, want not defined", name, err)
		}
	}
}

type data struct {
	PluginName string
	CN         string
	SANs       []string
	Labels     map[string]any
}

func TestRender(t *testing.T) {
	d := data{PluginName: "x509pop", CN: "Node-01.Example.ORG ", SANs: []string{"b.example.org", "a.example.org", "b.example.org"},
		Labels: map[string]any{"zone": "eu-1", "rack": "r7"}}
	for _, tc := range []struct{ tmpl, want string }{
		{`/{{ .PluginName }}/{{ .CN | trim | lower }}`, "/x509pop/node-01.example.org"},
		{`/{{ .CN | trim | trunc 7 | upper }}`, "/NODE-01"},
		{`/{{ .CN | trim | trunc -3 }}`, "/ORG"},
		{`/{{ .CN | trim | substr 0 4 }}`, "/Node"},
		{`/{{ .CN | trim | replace "." "-" | lower }}`, "/node-01-example-org"},
		// The value comes last, as in sprig: piped in, it would be the replacement.
		{`/{{ regexReplaceAll "[^a-zA-Z0-9]+" (.CN | trim) "_" | lower }}`, "/node_01_example_org"},
		{`/{{ regexFind "[0-9]+" .CN }}`, "/01"},
		{`/{{ .CN | trim | splitList "." | first | lower }}`, "/node-01"},
		{`/{{ .CN | trim | splitList "." | last }}`, "/ORG"},
		{`/{{ .SANs | uniq | sortAlpha | join "_" }}`, "/a.example.org_b.example.org"},
		{`/{{ index .SANs 0 | sha256sum | trunc 12 }}`, "/" + sha256Prefix("b.example.org", 12)},
		{`/{{ .CN | trim | lower | adler32sum }}`, "/" + adler("node-01.example.org")},
		{`/{{ .Labels.zone }}/{{ get .Labels "rack" }}/{{ get .Labels "row" | default "row0" }}`, "/eu-1/r7/row0"},
		{`/{{ keys .Labels | sortAlpha | join "-" }}`, "/rack-zone"},
		{`/{{ if hasKey .Labels "zone" }}zoned{{ else }}flat{{ end }}`, "/zoned"},
		{`/{{ ternary "yes" "no" (hasPrefix "Node" .CN) }}`, "/yes"},
		{`/{{ coalesce "" .CN | trim | nospace | lower | abbrev 8 }}`, "/node-..."},
		{`/{{ "Node Name" | snakecase }}/{{ "node_name" | camelcase }}/{{ "NodeName" | kebabcase }}`, "/node_name/NodeName/node-name"},
		{`/{{ "a b c" | nospace }}/{{ "hello world" | title | nospace }}/{{ "Hello World" | untitle | nospace }}`, "/abc/HelloWorld/helloworld"},
		{`/{{ "Hello World" | swapcase | nospace }}/{{ "Hello World" | initials }}`, "/hELLOwORLD/HW"},
		{`/{{ "node" | b64enc | trimSuffix "==" }}/{{ "bm9kZQ==" | b64dec }}/{{ "node" | b32enc | lower | trimAll "=" }}`, "/bm9kZQ/node/nzxwizi"},
		{`/{{ "/a/b/c.pem" | base }}/{{ "/a/b/c.pem" | ext }}/{{ "/a//b/../c" | clean | trimPrefix "/" }}`, "/c.pem/.pem/a/c"},
		{`/{{ (urlParse "https://host.example:8443/p").hostname }}`, "/host.example"},
		{`/{{ list 3 1 2 | reverse | toStrings | join "" }}/{{ seq 3 | nospace }}`, "/213/123"},
		{`/{{ dict "a" "x" "b" "y" | values | toStrings | sortAlpha | join "" }}`, "/xy"},
		{`/{{ plural "node" "nodes" (len .SANs) }}/{{ repeat 2 "ab" }}`, "/nodes/abab"},
		{`/{{ dig "zone" "none" .Labels }}/{{ dig "nope" "none" .Labels }}`, "/eu-1/none"},
	} {
		tmpl, err := Parse("x509pop", tc.tmpl)
		if err != nil {
			t.Errorf("%s: %v", tc.tmpl, err)
			continue
		}
		id, err := AgentID(td, tmpl, d)
		if err != nil {
			t.Errorf("%s: %v", tc.tmpl, err)
			continue
		}
		if want := "spiffe://example.org/spire/agent" + tc.want; id.String() != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.tmpl, id, want)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	d := data{PluginName: "x509pop", CN: "a/../b"}
	for _, tc := range []struct{ tmpl, want string }{
		{`/{{ .Nope }}`, `can't evaluate field Nope`},
		{`/{{ .CN }}`, `agent path "/a/../b"`},
		{`/{{ fail "no CN" }}`, `no CN`},
		{`/{{ regexFind "(" .CN }}`, `error parsing regexp`},
		{`/{{ first .CN }}`, `Cannot find first on type string`},
		{`/{{ "" }}`, `agent path "/"`},
	} {
		tmpl, err := Parse("x509pop", tc.tmpl)
		if err != nil {
			t.Errorf("%s: %v", tc.tmpl, err)
			continue
		}
		if id, err := AgentID(td, tmpl, d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v %v, want an error with %q", tc.tmpl, id, err, tc.want)
		}
	}
}

// FuzzAgentID: template data comes from the attested node (certificate
// fields, cloud documents); whatever it holds, rendering returns an ID
// under /spire/agent or an error, and never panics.
func FuzzAgentID(f *testing.F) {
	f.Add("node-01", "a.example.org")
	f.Add("../..", "")
	f.Add("a//b", "%2e%2e")
	templates := []string{
		Default,
		`/{{ .PluginName }}/{{ .CN | lower | regexReplaceAll "[^a-z0-9.-]" "_" }}`,
		`/{{ .CN | splitList "." | first }}/{{ .SANs | sortAlpha | join "," | sha256sum | trunc 8 }}`,
		`/{{ .CN | b64dec | nospace | trimPrefix "/" }}`,
	}
	f.Fuzz(func(t *testing.T, cn, san string) {
		d := data{PluginName: "x509pop", CN: cn, SANs: []string{san, cn}}
		for _, text := range templates {
			tmpl, err := Parse("x509pop", strings.ReplaceAll(text, "{{ .Fingerprint }}", "{{ .CN }}"))
			if err != nil {
				t.Fatal(err)
			}
			id, err := AgentID(td, tmpl, d)
			if err == nil && !strings.HasPrefix(id.Path(), "/spire/agent/") {
				t.Fatalf("%s rendered %s", text, id)
			}
		}
	})
}

func sha256Prefix(s string, n int) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:n]
}

func adler(s string) string { return strconv.FormatUint(uint64(adler32.Checksum([]byte(s))), 10) }
