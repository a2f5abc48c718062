package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// parseCmd builds the named command and parses args into it, failing the
// test if parsing fails.
func parseCmd[T command](t *testing.T, name string, args ...string) T {
	t.Helper()
	cmd := commandFactories[name]()
	var stderr bytes.Buffer
	if _, err := parseFlags(name, cmd, args, &stderr); err != nil {
		t.Fatalf("parse %s %v: %v (%s)", name, args, err, stderr.String())
	}
	return cmd.(T)
}

func requireProtoEqual(t *testing.T, want, got proto.Message) {
	t.Helper()
	if !proto.Equal(want, got) {
		t.Fatalf("request mismatch\nwant: %v\n got: %v", want, got)
	}
}

func requireErrContains(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected error containing %q, got nil", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("expected error containing %q, got %q", want, err.Error())
	}
}

func sid(td, path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: td, Path: path} }

func TestEntryCreateRequest(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		want    *types.Entry
		wantErr string
	}{
		{
			name: "minimal",
			args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/agent", "-selector", "unix:uid:1000"},
			want: &types.Entry{
				SpiffeId:  sid("example.org", "/w"),
				ParentId:  sid("example.org", "/agent"),
				Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}},
			},
		},
		{
			name: "every field",
			args: []string{
				"-entryID", "my-id", "-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/agent",
				"-selector", "unix:uid:1000", "-selector", "k8s:ns:default", "-x509SVIDTTL", "300", "-jwtSVIDTTL", "60",
				"-dns", "a.example", "-dns", "b.example", "-admin", "-downstream", "-federatesWith", "spiffe://other.org",
				"-entryExpiry", "1700000000", "-storeSVID", "-hint", "external",
			},
			want: &types.Entry{
				Id:            "my-id",
				SpiffeId:      sid("example.org", "/w"),
				ParentId:      sid("example.org", "/agent"),
				Selectors:     []*types.Selector{{Type: "unix", Value: "uid:1000"}, {Type: "k8s", Value: "ns:default"}},
				X509SvidTtl:   300,
				JwtSvidTtl:    60,
				DnsNames:      []string{"a.example", "b.example"},
				Admin:         true,
				Downstream:    true,
				FederatesWith: []string{"spiffe://other.org"},
				ExpiresAt:     1700000000,
				StoreSvid:     true,
				Hint:          "external",
			},
		},
		{
			name: "node entry is parented by the server",
			args: []string{"-spiffeID", "spiffe://example.org/nodes", "-node", "-selector", "join_token:abc"},
			want: &types.Entry{
				SpiffeId:  sid("example.org", "/nodes"),
				ParentId:  sid("example.org", "/spire/server"),
				Selectors: []*types.Selector{{Type: "join_token", Value: "abc"}},
			},
		},
		{
			name: "deprecated ttl sets only the X509-SVID TTL",
			args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b", "-ttl", "120"},
			want: &types.Entry{
				SpiffeId:    sid("example.org", "/w"),
				ParentId:    sid("example.org", "/a"),
				Selectors:   []*types.Selector{{Type: "a", Value: "b"}},
				X509SvidTtl: 120,
			},
		},
		{name: "no selector", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a"}, wantErr: "at least one selector is required (set -selector"},
		{name: "no parent", args: []string{"-spiffeID", "spiffe://example.org/w", "-selector", "a:b"}, wantErr: "a parent ID is required if the node flag is not set"},
		{name: "no spiffe id", args: []string{"-parentID", "spiffe://example.org/a", "-selector", "a:b"}, wantErr: "a SPIFFE ID is required (set -spiffeID)"},
		{name: "node entries can not federate", args: []string{"-spiffeID", "spiffe://example.org/w", "-node", "-selector", "a:b", "-federatesWith", "spiffe://o.org"}, wantErr: "node entries can not federate"},
		{name: "negative ttl", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b", "-ttl", "-1"}, wantErr: "a positive TTL is required"},
		{name: "negative x509 ttl", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b", "-x509SVIDTTL", "-1"}, wantErr: "a positive x509-SVID TTL is required"},
		{name: "negative jwt ttl", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b", "-jwtSVIDTTL", "-1"}, wantErr: "a positive JWT-SVID TTL is required"},
		{name: "ttl mixed with new ttls", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b", "-ttl", "5", "-jwtSVIDTTL", "5"}, wantErr: "use x509SVIDTTL and jwtSVIDTTL flags or the deprecated ttl flag"},
		{name: "selector without colon", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "unix"}, wantErr: `selector "unix" must be formatted as type:value`},
		{name: "malformed spiffe id", args: []string{"-spiffeID", "example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b"}, wantErr: `invalid -spiffeID "example.org/w": scheme is missing or invalid`},
		{name: "malformed parent id", args: []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a/", "-selector", "a:b"}, wantErr: `invalid -parentID`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := parseCmd[*entryCreateCommand](t, "entry create", tt.args...)
			req, err := cmd.buildRequest(strings.NewReader(""))
			if tt.wantErr != "" {
				requireErrContains(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			requireProtoEqual(t, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{tt.want}}, req)
		})
	}
}

func TestEntryCreateFromData(t *testing.T) {
	data := `{"entries":[{"selectors":[{"type":"unix","value":"uid:1111"}],"spiffe_id":"spiffe://example.org/Blog","parent_id":"spiffe://example.org/spire/agent/join_token/TokenBlog","x509_svid_ttl":200,"federates_with":["spiffe://other.org"],"dns_names":["blog"],"entryExpiry":99,"admin":true,"hint":"h"},
	{"selectors":[{"type":"unix","value":"uid:1112"}],"spiffe_id":"spiffe://example.org/Db","parent_id":"spiffe://example.org/agent","ttl":50}]}`
	want := []*types.Entry{
		{
			SpiffeId: sid("example.org", "/Blog"), ParentId: sid("example.org", "/spire/agent/join_token/TokenBlog"),
			Selectors: []*types.Selector{{Type: "unix", Value: "uid:1111"}}, X509SvidTtl: 200,
			FederatesWith: []string{"other.org"}, DnsNames: []string{"blog"}, ExpiresAt: 99, Admin: true, Hint: "h",
		},
		{
			SpiffeId: sid("example.org", "/Db"), ParentId: sid("example.org", "/agent"),
			Selectors: []*types.Selector{{Type: "unix", Value: "uid:1112"}}, X509SvidTtl: 50,
		},
	}
	path := filepath.Join(t.TempDir(), "entries.json")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		args  []string
		stdin io.Reader
	}{
		// Other flags are ignored when -data is given, as in SPIRE.
		{name: "file", args: []string{"-data", path, "-spiffeID", "ignored"}, stdin: strings.NewReader("")},
		{name: "stdin", args: []string{"-data", "-"}, stdin: strings.NewReader(data)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := parseCmd[*entryCreateCommand](t, "entry create", tt.args...)
			req, err := cmd.buildRequest(tt.stdin)
			if err != nil {
				t.Fatal(err)
			}
			requireProtoEqual(t, &entryv1.BatchCreateEntryRequest{Entries: want}, req)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		cmd := parseCmd[*entryCreateCommand](t, "entry create", "-data", filepath.Join(t.TempDir(), "nope.json"))
		_, err := cmd.buildRequest(strings.NewReader(""))
		requireErrContains(t, err, "unable to read entry data")
	})
}

func TestParseEntryJSONErrors(t *testing.T) {
	for _, tt := range []struct {
		name, data, wantErr string
	}{
		{"not json", `{`, "invalid entry data"},
		{"no entries", `{"entries":[]}`, "no entries"},
		{"null entry", `{"entries":[null]}`, "missing registration entry"},
		{"bad spiffe id", `{"entries":[{"spiffe_id":"nope","parent_id":"spiffe://td/a"}]}`, "entry 0: invalid SPIFFE ID"},
		{"bad parent id", `{"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://TD/a"}]}`, "invalid parent ID"},
		{"bad federated td", `{"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/a","federates_with":["spiffe://Bad TD"]}]}`, "invalid federated trust domain"},
		{"null selector", `{"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/a","selectors":[null]}]}`, "null selector"},
		{"wrong type", `{"entries":[{"spiffe_id":5}]}`, "invalid entry data"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEntryJSON([]byte(tt.data))
			requireErrContains(t, err, tt.wantErr)
		})
	}
}

func TestEntryUpdateRequest(t *testing.T) {
	cmd := parseCmd[*entryUpdateCommand](t, "entry update", "-entryID", "e1", "-spiffeID", "spiffe://example.org/w",
		"-parentID", "spiffe://example.org/a", "-selector", "unix:uid:0", "-storeSVID", "-hint", "h")
	req, err := cmd.buildRequest(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{{
		Id: "e1", SpiffeId: sid("example.org", "/w"), ParentId: sid("example.org", "/a"),
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:0"}}, StoreSvid: true, Hint: "h",
	}}}, req)

	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no entry id", []string{"-spiffeID", "spiffe://example.org/w", "-parentID", "spiffe://example.org/a", "-selector", "a:b"}, "entry ID is required (set -entryID)"},
		{"no parent id", []string{"-entryID", "e", "-spiffeID", "spiffe://example.org/w", "-selector", "a:b"}, "a parent ID is required (set -parentID)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := parseCmd[*entryUpdateCommand](t, "entry update", tt.args...)
			_, err := cmd.buildRequest(strings.NewReader(""))
			requireErrContains(t, err, tt.wantErr)
		})
	}

	// update has no -node flag in SPIRE.
	var stderr bytes.Buffer
	if _, err := parseFlags("entry update", commandFactories["entry update"](), []string{"-node"}, &stderr); err == nil {
		t.Fatal("entry update accepted -node")
	}
}

func TestEntryDeleteRequest(t *testing.T) {
	cmd := parseCmd[*entryDeleteCommand](t, "entry delete", "-entryID", "e1")
	req, err := cmd.buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &entryv1.BatchDeleteEntryRequest{Ids: []string{"e1"}}, req)

	_, err = parseCmd[*entryDeleteCommand](t, "entry delete").buildRequest()
	requireErrContains(t, err, "an entry ID is required (set -entryID)")
}

func TestEntryShowAndCountRequests(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		want    *entryv1.ListEntriesRequest_Filter
		wantErr string
	}{
		{name: "no filter", want: &entryv1.ListEntriesRequest_Filter{}},
		{
			name: "every filter",
			args: []string{"-parentID", "spiffe://example.org/a", "-spiffeID", "spiffe://example.org/w", "-selector", "unix:uid:1", "-selector", "unix:gid:2",
				"-matchSelectorsOn", "exact", "-federatesWith", "spiffe://o.org", "-matchFederatesWithOn", "any", "-hint", "h", "-downstream"},
			want: &entryv1.ListEntriesRequest_Filter{
				ByParentId: sid("example.org", "/a"),
				BySpiffeId: sid("example.org", "/w"),
				BySelectors: &types.SelectorMatch{
					Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}, {Type: "unix", Value: "gid:2"}},
					Match:     types.SelectorMatch_MATCH_EXACT,
				},
				ByFederatesWith: &types.FederatesWithMatch{TrustDomains: []string{"spiffe://o.org"}, Match: types.FederatesWithMatch_MATCH_ANY},
				ByHint:          wrapperspb.String("h"),
				ByDownstream:    wrapperspb.Bool(true),
			},
		},
		{
			name: "selector match defaults to superset",
			args: []string{"-selector", "a:b"},
			want: &entryv1.ListEntriesRequest_Filter{BySelectors: &types.SelectorMatch{
				Selectors: []*types.Selector{{Type: "a", Value: "b"}}, Match: types.SelectorMatch_MATCH_SUPERSET,
			}},
		},
		{name: "unknown selector match", args: []string{"-selector", "a:b", "-matchSelectorsOn", "most"}, wantErr: `match behavior "most" unknown`},
		{name: "unknown federates match", args: []string{"-federatesWith", "spiffe://o.org", "-matchFederatesWithOn", "x"}, wantErr: `match behavior "x" unknown`},
		{name: "bad selector", args: []string{"-selector", "nocolon"}, wantErr: `error parsing selectors: selector "nocolon" must be formatted as type:value`},
		{name: "bad parent", args: []string{"-parentID", "x"}, wantErr: `error parsing parent ID "x"`},
		{name: "bad spiffe id", args: []string{"-spiffeID", "x"}, wantErr: `error parsing SPIFFE ID "x"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			show := parseCmd[*entryShowCommand](t, "entry show", tt.args...)
			get, list, err := show.buildRequest()
			count := parseCmd[*entryCountCommand](t, "entry count", tt.args...)
			countReq, countErr := count.buildRequest()
			if tt.wantErr != "" {
				requireErrContains(t, err, tt.wantErr)
				requireErrContains(t, countErr, tt.wantErr)
				return
			}
			if err != nil || countErr != nil {
				t.Fatal(err, countErr)
			}
			if get != nil {
				t.Fatal("expected a list request")
			}
			requireProtoEqual(t, &entryv1.ListEntriesRequest{Filter: tt.want, PageSize: 500}, list)
			requireProtoEqual(t, &entryv1.CountEntriesRequest{Filter: &entryv1.CountEntriesRequest_Filter{
				BySpiffeId: tt.want.BySpiffeId, ByParentId: tt.want.ByParentId, BySelectors: tt.want.BySelectors,
				ByFederatesWith: tt.want.ByFederatesWith, ByHint: tt.want.ByHint, ByDownstream: tt.want.ByDownstream,
			}}, countReq)
		})
	}

	t.Run("entry id", func(t *testing.T) {
		get, list, err := parseCmd[*entryShowCommand](t, "entry show", "-entryID", "e1").buildRequest()
		if err != nil || list != nil {
			t.Fatal(err, list)
		}
		requireProtoEqual(t, &entryv1.GetEntryRequest{Id: "e1"}, get)
	})
	t.Run("entry id with other filters", func(t *testing.T) {
		_, _, err := parseCmd[*entryShowCommand](t, "entry show", "-entryID", "e1", "-spiffeID", "spiffe://td/w").buildRequest()
		requireErrContains(t, err, "the -entryID flag can't be combined with others")
	})
}

// spireEntryExample is SPIRE's documented output of "entry create".
const spireEntryExample = `Entry ID         : 7df39966-be54-4c18-9d70-ad2873103f9a
SPIFFE ID        : spiffe://example.org/nri-identity-plugin
Parent ID        : spiffe://example.org/spire/agent/k8s_psat/demo-cluster/ef02
Revision         : 0
X509-SVID TTL    : 120
JWT-SVID TTL     : default
Selector         : k8s:ns:kube-system
Selector         : unix:uid:0

`

func exampleEntry() *types.Entry {
	return &types.Entry{
		Id:          "7df39966-be54-4c18-9d70-ad2873103f9a",
		SpiffeId:    sid("example.org", "/nri-identity-plugin"),
		ParentId:    sid("example.org", "/spire/agent/k8s_psat/demo-cluster/ef02"),
		X509SvidTtl: 120,
		Selectors:   []*types.Selector{{Type: "k8s", Value: "ns:kube-system"}, {Type: "unix", Value: "uid:0"}},
	}
}

func TestPrintEntry(t *testing.T) {
	var buf bytes.Buffer
	printEntry(&buf, exampleEntry())
	if buf.String() != spireEntryExample {
		t.Fatalf("got:\n%s\nwant:\n%s", buf.String(), spireEntryExample)
	}

	buf.Reset()
	printEntry(&buf, &types.Entry{
		SpiffeId: sid("td", "/w"), ParentId: sid("td", "/a"), RevisionNumber: 3, Downstream: true, JwtSvidTtl: 30,
		ExpiresAt: 1552410266, FederatesWith: []string{"spiffe://o.org"}, DnsNames: []string{"x.test"},
		Admin: true, StoreSvid: true, Hint: "h",
	})
	want := `Entry ID         : (none)
SPIFFE ID        : spiffe://td/w
Parent ID        : spiffe://td/a
Revision         : 3
Downstream       : true
X509-SVID TTL    : default
JWT-SVID TTL     : 30
Expiration time  : 2019-03-12 17:04:26 +0000 UTC
FederatesWith    : spiffe://o.org
DNS name         : x.test
Admin            : true
StoreSvid        : true
Hint             : h

`
	if buf.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func newTestEnv() (*env, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}, &stdout, &stderr
}

func TestPrintCreateResults(t *testing.T) {
	failedEntry := &types.Entry{SpiffeId: sid("td", "/dup"), ParentId: sid("td", "/a"), Selectors: []*types.Selector{{Type: "a", Value: "b"}}}
	resp := &entryv1.BatchCreateEntryResponse{Results: []*entryv1.BatchCreateEntryResponse_Result{
		{Status: &types.Status{Code: int32(codes.OK), Message: "OK"}, Entry: exampleEntry()},
		{Status: &types.Status{Code: int32(codes.AlreadyExists), Message: "similar entry already exists"}, Entry: failedEntry},
	}}

	e, stdout, stderr := newTestEnv()
	err := printCreateResults(e, outputPretty, resp)
	requireErrContains(t, err, "failed to create one or more entries")
	if stdout.String() != spireEntryExample {
		t.Fatalf("stdout:\n%s", stdout.String())
	}
	wantErr := "Failed to create the following entry (code: AlreadyExists, msg: \"similar entry already exists\"):\nEntry ID         : (none)\nSPIFFE ID        : spiffe://td/dup\n"
	if !strings.HasPrefix(stderr.String(), wantErr) {
		t.Fatalf("stderr:\n%s", stderr.String())
	}

	// With JSON output the failed result's status is in the JSON and the
	// command succeeds, as SPIRE's does.
	e, stdout, _ = newTestEnv()
	if err := printCreateResults(e, outputJSON, resp); err != nil {
		t.Fatalf("JSON output of a partly failed create: %v", err)
	}
	requireJSONEq(t, `{"results":[
		{"status":{"code":0,"message":"OK"},"entry":{"id":"7df39966-be54-4c18-9d70-ad2873103f9a","spiffe_id":{"trust_domain":"example.org","path":"/nri-identity-plugin"},"parent_id":{"trust_domain":"example.org","path":"/spire/agent/k8s_psat/demo-cluster/ef02"},"selectors":[{"type":"k8s","value":"ns:kube-system"},{"type":"unix","value":"uid:0"}],"x509_svid_ttl":120,"federates_with":[],"admin":false,"downstream":false,"expires_at":"0","dns_names":[],"revision_number":"0","store_svid":false,"jwt_svid_ttl":0,"hint":"","created_at":"0"}},
		{"status":{"code":6,"message":"similar entry already exists"},"entry":{"id":"","spiffe_id":{"trust_domain":"td","path":"/dup"},"parent_id":{"trust_domain":"td","path":"/a"},"selectors":[{"type":"a","value":"b"}],"x509_svid_ttl":0,"federates_with":[],"admin":false,"downstream":false,"expires_at":"0","dns_names":[],"revision_number":"0","store_svid":false,"jwt_svid_ttl":0,"hint":"","created_at":"0"}}]}`, stdout.String())

	e, stdout, _ = newTestEnv()
	if err := printCreateResults(e, outputPretty, &entryv1.BatchCreateEntryResponse{Results: resp.Results[:1]}); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != spireEntryExample {
		t.Fatalf("stdout:\n%s", stdout.String())
	}
}

func TestPrintUpdateAndDeleteResults(t *testing.T) {
	e, _, stderr := newTestEnv()
	err := printUpdateResults(e, outputPretty, &entryv1.BatchUpdateEntryResponse{Results: []*entryv1.BatchUpdateEntryResponse_Result{
		{Status: &types.Status{Code: int32(codes.NotFound), Message: "entry not found"}, Entry: &types.Entry{Id: "gone"}},
	}})
	requireErrContains(t, err, "failed to update one or more entries")
	if !strings.HasPrefix(stderr.String(), "Failed to update the following entry (code: NotFound, msg: \"entry not found\"):\nEntry ID         : gone\n") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}

	e, stdout, _ := newTestEnv()
	ok := &entryv1.BatchDeleteEntryResponse{Results: []*entryv1.BatchDeleteEntryResponse_Result{{Status: &types.Status{}, Id: "e1"}}}
	if err := printDeleteResults(e, outputPretty, ok); err != nil {
		t.Fatal(err)
	}
	// SPIRE's exact text, blank lines and summary without newline included.
	if stdout.String() != "Deleted entry with ID: e1\n\n\nDeleted 1 entries successfully" {
		t.Fatalf("stdout: %q", stdout.String())
	}
	e, stdout, stderr = newTestEnv()
	err = printDeleteResults(e, outputPretty, &entryv1.BatchDeleteEntryResponse{Results: []*entryv1.BatchDeleteEntryResponse_Result{
		{Status: &types.Status{}, Id: "e1"},
		{Status: &types.Status{Code: int32(codes.NotFound), Message: "entry not found"}, Id: "e2"},
	}})
	requireErrContains(t, err, "failed to delete one or more entries")
	if got, want := stderr.String(), "Failed to delete entry with ID e2 (code: NotFound, msg: \"entry not found\")\n"; got != want {
		t.Fatalf("stderr: %q, want %q", got, want)
	}
	if got, want := stdout.String(), "Deleted entry with ID: e1\n\n\n\n\nDeleted 1 entries successfully, but failed to delete 1 entries"; got != want {
		t.Fatalf("stdout: %q, want %q", got, want)
	}
	e, stdout, _ = newTestEnv()
	err = printDeleteResults(e, outputPretty, &entryv1.BatchDeleteEntryResponse{Results: []*entryv1.BatchDeleteEntryResponse_Result{
		{Status: &types.Status{Code: int32(codes.NotFound), Message: "entry not found"}, Id: "e2"},
	}})
	requireErrContains(t, err, "failed to delete one or more entries")
	if got, want := stdout.String(), "\n\nFailed to delete 1 entries"; got != want {
		t.Fatalf("stdout: %q, want %q", got, want)
	}
	e, _, _ = newTestEnv()
	requireErrContains(t, printDeleteResults(e, outputPretty, &entryv1.BatchDeleteEntryResponse{}), "no result")
}

func TestPrintShowAndCount(t *testing.T) {
	b := &types.Entry{Id: "b", SpiffeId: sid("td", "/b"), ParentId: sid("td", "/p"), Selectors: []*types.Selector{{Type: "z", Value: "1"}, {Type: "a", Value: "2"}}}
	a := &types.Entry{Id: "a", SpiffeId: sid("td", "/a"), ParentId: sid("td", "/p")}
	entries := []*types.Entry{b, a}
	sortEntries(entries)
	if entries[0] != a || b.Selectors[0].Type != "a" {
		t.Fatalf("entries not sorted by SPIFFE ID with sorted selectors: %v", entries)
	}

	e, stdout, _ := newTestEnv()
	if err := printShowResults(e, outputPretty, &entryv1.ListEntriesResponse{Entries: entries}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "Found 2 entries\nEntry ID         : a\n") || !strings.Contains(stdout.String(), "\n\nEntry ID         : b\n") {
		t.Fatalf("stdout:\n%s", stdout.String())
	}
	for n, want := range map[int]string{0: "Found 0 entries\n", 1: "Found 1 entry\n"} {
		e, stdout, _ := newTestEnv()
		_ = printShowResults(e, outputPretty, &entryv1.ListEntriesResponse{Entries: entries[:n]})
		if !strings.HasPrefix(stdout.String(), want) {
			t.Fatalf("stdout: %q", stdout.String())
		}
	}

	for count, want := range map[int32]string{0: "0 registration entries\n", 1: "1 registration entry\n", 7: "7 registration entries\n"} {
		e, stdout, _ := newTestEnv()
		if err := printEntryCount(e, outputPretty, &entryv1.CountEntriesResponse{Count: count}); err != nil {
			t.Fatal(err)
		}
		if stdout.String() != want {
			t.Fatalf("got %q want %q", stdout.String(), want)
		}
	}
	e, stdout, _ = newTestEnv()
	_ = printEntryCount(e, outputJSON, &entryv1.CountEntriesResponse{Count: 3})
	requireJSONEq(t, `{"count":3}`, stdout.String())
}
