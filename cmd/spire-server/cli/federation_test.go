package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/servertest"
)

func runMainStdin(stdin string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr}
	code := mainWithEnv(args, func([]string) int { return 7 }, e)
	return code, stdout.String(), stderr.String()
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFederationHelp: each command's usage is SPIRE v1.13.3's, flag for
// flag and word for word.
func TestFederationHelp(t *testing.T) {
	const socket = "  -socketPath string\n    \tPath to the SPIRE Server API socket (default \"/tmp/spire-server/private/api.sock\")\n"
	const output = "  -output value\n    \tDesired output format (pretty, json); default: pretty.\n"
	const relationshipFlags = "  -bundleEndpointProfile string\n    \tEndpoint profile type (either \"https_web\" or \"https_spiffe\")\n" +
		"  -bundleEndpointURL string\n    \tURL of the SPIFFE bundle endpoint that provides the trust bundle (must use the HTTPS protocol)\n" +
		"  -data string\n    \tPath to a file containing federation relationships in JSON format (optional). If set to '-', read the JSON from stdin.\n" +
		"  -endpointSpiffeID string\n    \tSPIFFE ID of the SPIFFE bundle endpoint server. Only used for 'spiffe' profile.\n" +
		output + socket +
		"  -trustDomain string\n    \tName of the trust domain to federate with (e.g., example.org)\n" +
		"  -trustDomainBundleFormat string\n    \tThe format of the bundle data (optional). Either \"pem\" or \"spiffe\". (default \"pem\")\n" +
		"  -trustDomainBundlePath string\n    \tPath to the trust domain bundle data (optional).\n"
	const id = "  -id string\n    \tSPIFFE ID of the trust domain\n"
	for cmd, want := range map[string]string{
		"create":  relationshipFlags,
		"update":  relationshipFlags,
		"delete":  id + output + socket,
		"refresh": id + output + socket,
		"list":    output + socket,
		"show":    output + socket + "  -trustDomain string\n    \tThe trust domain name of the federation relationship to show\n",
	} {
		code, out, errs := runMain("federation", cmd, "-h")
		if want = "Usage of federation " + cmd + ":\n" + want + "flag: help requested\n"; code != 0 || out != "" || errs != want {
			t.Errorf("federation %s -h: exit %d\n%s\nwant:\n%s", cmd, code, errs, want)
		}
	}
	const parent = "This command is accessed by using one of the subcommands below.\n\nSubcommands:\n" +
		"    create     Creates a dynamic federation relationship with a foreign trust domain\n" +
		"    delete     Deletes a dynamic federation relationship\n" +
		"    list       Lists all dynamic federation relationships\n" +
		"    refresh    Refreshes the bundle from the specified federated trust domain\n" +
		"    show       Shows a dynamic federation relationship\n" +
		"    update     Updates a dynamic federation relationship with a foreign trust domain\n"
	if code, _, errs := runMain("federation"); code != 1 || errs != parent {
		t.Errorf("federation: exit %d\n%s\nwant:\n%s", code, errs, parent)
	}
}

// TestFederationInputErrors: what SPIRE's CLI refuses before calling the
// server, refused with its words.
func TestFederationInputErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	corrupted := writeFile(t, "corrupted.pem", []byte("not a PEM file"))
	key := writeFile(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}))
	bad := writeFile(t, "bad.json", []byte(`{"federationRelationships":[{"trustDomain":"","bundleEndpointURL":"https://td-1.org/bundle","bundleEndpointProfile":"https_web"}]}`))
	rel := []string{"-trustDomain", "td.org", "-bundleEndpointURL", "https://td.org/bundle"}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"missing trust domain", []string{"federation", "create"}, "Error: trust domain is required\n"},
		{"missing URL", []string{"federation", "update", "-trustDomain", "td.org"}, "Error: bundle endpoint URL is required\n"},
		{"unknown profile", append([]string{"federation", "create", "-bundleEndpointProfile", "bad-type"}, rel...), "Error: unknown bundle endpoint profile type: \"bad-type\"\n"},
		{"no profile", append([]string{"federation", "create"}, rel...), "Error: unknown bundle endpoint profile type: \"\"\n"},
		{"missing endpoint ID", append([]string{"federation", "create", "-bundleEndpointProfile", "https_spiffe"}, rel...),
			"Error: endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set\n"},
		{"invalid endpoint ID", append([]string{"federation", "create", "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "invalid-id"}, rel...),
			"Error: cannot parse bundle endpoint SPIFFE ID: scheme is missing or invalid\n"},
		{"no bundle file", append([]string{"federation", "create", "-bundleEndpointProfile", "https_web", "-trustDomainBundlePath", "non-existent-path"}, rel...),
			"Error: cannot read bundle file: open non-existent-path: no such file or directory\n"},
		{"corrupted bundle file", append([]string{"federation", "create", "-bundleEndpointProfile", "https_web", "-trustDomainBundlePath", corrupted}, rel...),
			"Error: cannot parse bundle file: unable to parse bundle data: no PEM blocks\n"},
		{"key as bundle", append([]string{"federation", "create", "-bundleEndpointProfile", "https_web", "-trustDomainBundlePath", key}, rel...),
			"Error: cannot parse bundle file: unable to parse bundle data: expected block type \"CERTIFICATE\"; got \"PRIVATE KEY\"\n"},
		{"corrupted SPIFFE bundle", append([]string{"federation", "create", "-bundleEndpointProfile", "https_web", "-trustDomainBundlePath", corrupted, "-trustDomainBundleFormat", "spiffe"}, rel...),
			"Error: cannot parse bundle file: unable to parse to spiffe bundle: spiffebundle: unable to parse JWKS: invalid character 'o' in literal null (expecting 'u')\n"},
		{"data file missing", []string{"federation", "create", "-data", "somePath"}, "Error: open somePath: no such file or directory\n"},
		{"data not JSON", []string{"federation", "create", "-data", corrupted}, "Error: failed to parse JSON: invalid character 'o' in literal null (expecting 'u')\n"},
		{"data item invalid", []string{"federation", "update", "-data", bad}, "Error: could not parse item 0: trust domain is required\n"},
		{"data and flags", []string{"federation", "create", "-data", bad, "-bundleEndpointURL", "https://td-1.org/bundle"},
			"Error: cannot use other flags to specify relationship fields when 'data' flag is set\n"},
		{"data and bundle format", []string{"federation", "create", "-data", bad, "-trustDomainBundleFormat", "spiffe"},
			"Error: cannot use other flags to specify relationship fields when 'data' flag is set\n"},
		{"delete without id", []string{"federation", "delete"}, "Error: id is required\n"},
		{"refresh without id", []string{"federation", "refresh"}, "Error: id is required\n"},
		{"show without trust domain", []string{"federation", "show"}, "Error: a trust domain name is required\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, format := range []string{"pretty", "json"} {
				code, out, errs := runMain(append(tt.args, "-socketPath", missing, "-output", format)...)
				if code != 1 || out != "" || errs != tt.want {
					t.Fatalf("%s: exit %d, stdout %q\nstderr %q\nwant   %q", format, code, out, errs, tt.want)
				}
			}
		})
	}
	code, _, errs := runMain("federation", "list", "-socketPath", missing)
	if code != 1 || !strings.HasPrefix(errs, "Error: error listing federation relationship: rpc error: code = Unavailable") {
		t.Fatalf("unreachable server: exit %d, %q", code, errs)
	}
}

// TestFederationAgainstServer drives every command against a real server
// and its SQLite store, checking SPIRE's output in both formats.
func TestFederationAgainstServer(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	sock := []string{"-socketPath", s.Socket}
	run := func(stdin string, args ...string) (int, string, string) {
		return runMainStdin(stdin, append(args, sock...)...)
	}
	ca, _ := newCA(t, "td-3 root")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	bundlePath := writeFile(t, "td3.pem", caPEM)
	asn1 := base64.StdEncoding.EncodeToString(ca.Raw)

	code, out, errs := run("", "federation", "create", "-trustDomain", "td-1.org", "-bundleEndpointURL", "https://td-1.org/bundle", "-bundleEndpointProfile", "https_web")
	if want := "\nTrust domain              : td-1.org\nBundle endpoint URL       : https://td-1.org/bundle\nBundle endpoint profile   : https_web\n"; code != 0 || out != want || errs != "" {
		t.Fatalf("create web: exit %d\n%q\nwant %q\nstderr %q", code, out, want, errs)
	}
	code, out, errs = run("", "federation", "create", "-trustDomain", "td-3.org", "-bundleEndpointURL", "https://td-3.org/bundle",
		"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://td-3.org/bundle", "-trustDomainBundlePath", bundlePath, "-output", "json")
	if code != 0 || errs != "" {
		t.Fatalf("create spiffe with bundle: exit %d, %s", code, errs)
	}
	requireJSONEq(t, fmt.Sprintf(`{"results":[{"status":{"code":0,"message":"OK"},"federation_relationship":{
		"trust_domain":"td-3.org","bundle_endpoint_url":"https://td-3.org/bundle","https_spiffe":{"endpoint_spiffe_id":"spiffe://td-3.org/bundle"},
		"trust_domain_bundle":{"trust_domain":"td-3.org","x509_authorities":[{"asn1":%q,"tainted":false}],"jwt_authorities":[],"refresh_hint":"0","sequence_number":"0"}}}]}`, asn1), out)

	// -data on stdin: a PEM bundle inline, a SPIFFE bundle inline, and
	// one the server refuses (its own trust domain).
	sb := spiffebundle.New(spiffeid.RequireTrustDomainFromString("td-4.org"))
	sb.AddX509Authority(ca)
	sb.AddJWTAuthority("KID", ca.PublicKey)
	jwks, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pemJSON, _ := json.Marshal(string(caPEM))
	data := fmt.Sprintf(`{"federationRelationships":[
		{"trustDomain":"td-2.org","bundleEndpointURL":"https://td-2.org/bundle","bundleEndpointProfile":"https_spiffe","endpointSPIFFEID":"spiffe://td-2.org/bundle","trustDomainBundle":%s,"trustDomainBundleFormat":"pem"},
		{"trustDomain":"td-4.org","bundleEndpointURL":"https://td-4.org/bundle","bundleEndpointProfile":"https_spiffe","endpointSpiffeId":"spiffe://td-4.org/bundle","trustDomainBundle":%s,"trustDomainBundleFormat":"spiffe"},
		{"trustDomain":"example.org","bundleEndpointURL":"https://example.org/bundle","bundleEndpointProfile":"https_web"}]}`, pemJSON, jwks)
	code, out, errs = run(data, "federation", "create", "-data", "-")
	wantOut := "\nTrust domain              : td-2.org\nBundle endpoint URL       : https://td-2.org/bundle\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://td-2.org/bundle\n" +
		"\nTrust domain              : td-4.org\nBundle endpoint URL       : https://td-4.org/bundle\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://td-4.org/bundle\n\n"
	wantErr := "Failed to create the following federation relationship (code: InvalidArgument, msg: \"unable to create federation relationship for server trust domain\"):\n" +
		"Trust domain              : example.org\nBundle endpoint URL       : https://example.org/bundle\nBundle endpoint profile   : https_web\n" +
		"Error: failed to create one or more federation relationships\n"
	if code != 1 || out != wantOut || errs != wantErr {
		t.Fatalf("create -data: exit %d\nstdout %q\nwant   %q\nstderr %q\nwant   %q", code, out, wantOut, errs, wantErr)
	}
	code, out, _ = run("", "federation", "show", "-trustDomain", "td-4.org", "-output", "json")
	if code != 0 || !strings.Contains(out, `"key_id":"KID"`) {
		t.Fatalf("the SPIFFE bundle's JWT key was not stored: %s", out)
	}

	code, out, errs = run("", "federation", "list")
	wantList := "Found 4 federation relationships\n" +
		"\nTrust domain              : td-1.org\nBundle endpoint URL       : https://td-1.org/bundle\nBundle endpoint profile   : https_web\n" +
		"\nTrust domain              : td-2.org\nBundle endpoint URL       : https://td-2.org/bundle\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://td-2.org/bundle\n" +
		"\nTrust domain              : td-3.org\nBundle endpoint URL       : https://td-3.org/bundle\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://td-3.org/bundle\n" +
		"\nTrust domain              : td-4.org\nBundle endpoint URL       : https://td-4.org/bundle\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://td-4.org/bundle\n"
	if code != 0 || out != wantList {
		t.Fatalf("list: exit %d\n%q\nwant %q\n%s", code, out, wantList, errs)
	}

	code, out, _ = run("", "federation", "show", "-trustDomain", "td-1.org")
	if want := "Found a federation relationship with trust domain td-1.org:\n\nTrust domain              : td-1.org\nBundle endpoint URL       : https://td-1.org/bundle\nBundle endpoint profile   : https_web\n"; code != 0 || out != want {
		t.Fatalf("show: exit %d\n%q\nwant %q", code, out, want)
	}
	code, out, _ = run("", "federation", "show", "-trustDomain", "td-1.org", "-output", "json")
	if code != 0 {
		t.Fatalf("show json: exit %d", code)
	}
	requireJSONEq(t, `{"trust_domain":"td-1.org","bundle_endpoint_url":"https://td-1.org/bundle","https_web":{}}`, out)
	code, _, errs = run("", "federation", "show", "-trustDomain", "none.org")
	if want := "Error: error showing federation relationship: rpc error: code = NotFound desc = federation relationship does not exist\n"; code != 1 || errs != want {
		t.Fatalf("show missing: exit %d, %q", code, errs)
	}

	code, out, errs = run("", "federation", "update", "-trustDomain", "td-1.org", "-bundleEndpointURL", "https://td-1.org/moved",
		"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://td-1.org/spire/server")
	if want := "\nTrust domain              : td-1.org\nBundle endpoint URL       : https://td-1.org/moved\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://td-1.org/spire/server\n"; code != 0 || out != want {
		t.Fatalf("update: exit %d\n%q\nwant %q\n%s", code, out, want, errs)
	}
	code, out, errs = run("", "federation", "update", "-trustDomain", "none.org", "-bundleEndpointURL", "https://none.org/b", "-bundleEndpointProfile", "https_web")
	if code != 1 || out != "\n" || !strings.HasPrefix(errs, "Failed to update the following federation relationship (code: Internal, msg: \"failed to update federation relationship: ") ||
		!strings.HasSuffix(errs, "\"):\nTrust domain              : none.org\nBundle endpoint URL       : https://none.org/b\nBundle endpoint profile   : https_web\nError: failed to update one or more federation relationships\n") {
		t.Fatalf("update missing: exit %d, stdout %q\n%s", code, out, errs)
	}

	code, out, _ = run("", "federation", "delete", "-id", "td-2.org")
	if code != 0 || out != "federation relationship deleted.\n" {
		t.Fatalf("delete: exit %d, %q", code, out)
	}
	code, _, errs = run("", "federation", "delete", "-id", "td-2.org")
	if want := "Error: failed to delete federation relationship \"td-2.org\": federation relationship not found\n"; code != 1 || errs != want {
		t.Fatalf("delete again: exit %d, %q", code, errs)
	}
	code, out, _ = run("", "federation", "delete", "-id", "td-3.org", "-output", "json")
	if code != 0 {
		t.Fatalf("delete json: exit %d", code)
	}
	requireJSONEq(t, `{"results":[{"status":{"code":0,"message":"OK"},"trust_domain":"td-3.org"}]}`, out)
	code, out, _ = run("", "federation", "list", "-output", "json")
	if code != 0 {
		t.Fatalf("list json: exit %d", code)
	}
	var listed struct {
		FederationRelationships []struct {
			TrustDomain string `json:"trust_domain"`
		} `json:"federation_relationships"`
		NextPageToken *string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.FederationRelationships) != 2 || listed.NextPageToken == nil {
		t.Fatalf("list json after deletes: %v %s", err, out)
	}

	code, _, errs = run("", "federation", "refresh", "-id", "spiffe://none.org")
	if want := "Error: there is no federation relationship with trust domain \"spiffe://none.org\"\n"; code != 1 || errs != want {
		t.Fatalf("refresh without relationship: exit %d, %q", code, errs)
	}
}
