package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func requireJSONEq(t *testing.T, want, got string) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expected JSON: %v", err)
	}
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if !reflect.DeepEqual(w, g) {
		t.Fatalf("JSON mismatch\nwant: %s\n got: %s", want, got)
	}
}

func TestAgentListAndCountRequests(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		want    *agentv1.ListAgentsRequest_Filter
		wantErr string
	}{
		{name: "no filter", want: &agentv1.ListAgentsRequest_Filter{}},
		{
			name: "selectors default to superset",
			args: []string{"-selector", "foo:bar", "-selector", "bar:baz"},
			want: &agentv1.ListAgentsRequest_Filter{BySelectorMatch: &types.SelectorMatch{
				Selectors: []*types.Selector{{Type: "foo", Value: "bar"}, {Type: "bar", Value: "baz"}},
				Match:     types.SelectorMatch_MATCH_SUPERSET,
			}},
		},
		{
			name: "every filter",
			args: []string{"-selector", "x509pop:subject:cn:a", "-matchSelectorsOn", "any", "-attestationType", "join_token",
				"-canReattest", "false", "-banned", "true", "-expiresBefore", "2030-01-02 15:04:05 +0000 +00"},
			want: &agentv1.ListAgentsRequest_Filter{
				BySelectorMatch:   &types.SelectorMatch{Selectors: []*types.Selector{{Type: "x509pop", Value: "subject:cn:a"}}, Match: types.SelectorMatch_MATCH_ANY},
				ByAttestationType: "join_token",
				ByCanReattest:     wrapperspb.Bool(false),
				ByBanned:          wrapperspb.Bool(true),
				ByExpiresBefore:   "2030-01-02 15:04:05 +0000 +00",
			},
		},
		{name: "tri-state flags ignore other values", args: []string{"-banned", "maybe", "-canReattest", "TRUE"}, want: &agentv1.ListAgentsRequest_Filter{ByCanReattest: wrapperspb.Bool(true)}},
		{name: "bad matcher", args: []string{"-selector", "a:b", "-matchSelectorsOn", "NO-MATCHER"}, wantErr: `match behavior "NO-MATCHER" unknown`},
		{name: "bad selector", args: []string{"-selector", "invalid-selector"}, wantErr: `error parsing selector "invalid-selector": selector "invalid-selector" must be formatted as type:value`},
		{name: "bad date", args: []string{"-expiresBefore", "2030-01-02"}, wantErr: "date is not valid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			list, err := parseCmd[*agentListCommand](t, "agent list", tt.args...).buildRequest()
			count, countErr := parseCmd[*agentCountCommand](t, "agent count", tt.args...).buildRequest()
			if tt.wantErr != "" {
				requireErrContains(t, err, tt.wantErr)
				requireErrContains(t, countErr, tt.wantErr)
				return
			}
			if err != nil || countErr != nil {
				t.Fatal(err, countErr)
			}
			requireProtoEqual(t, &agentv1.ListAgentsRequest{Filter: tt.want, PageSize: 1000}, list)
			requireProtoEqual(t, &agentv1.CountAgentsRequest{Filter: &agentv1.CountAgentsRequest_Filter{
				ByAttestationType: tt.want.ByAttestationType, BySelectorMatch: tt.want.BySelectorMatch,
				ByBanned: tt.want.ByBanned, ByCanReattest: tt.want.ByCanReattest, ByExpiresBefore: tt.want.ByExpiresBefore,
			}}, count)
		})
	}
}

func TestAgentSingleIDRequests(t *testing.T) {
	want := sid("example.org", "/spire/agent/agent1")
	args := []string{"-spiffeID", "spiffe://example.org/spire/agent/agent1"}

	show, err := parseCmd[*agentShowCommand](t, "agent show", args...).buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &agentv1.GetAgentRequest{Id: want}, show)
	evict, err := parseCmd[*agentEvictCommand](t, "agent evict", args...).buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &agentv1.DeleteAgentRequest{Id: want}, evict)
	ban, err := parseCmd[*agentBanCommand](t, "agent ban", args...).buildRequest()
	if err != nil {
		t.Fatal(err)
	}
	requireProtoEqual(t, &agentv1.BanAgentRequest{Id: want}, ban)

	for _, name := range []string{"agent show", "agent evict", "agent ban"} {
		t.Run(name, func(t *testing.T) {
			cmd := commandFactories[name]()
			if _, err := parseFlags(name, cmd, nil, new(strings.Builder)); err != nil {
				t.Fatal(err)
			}
			var err error
			switch c := cmd.(type) {
			case *agentShowCommand:
				_, err = c.buildRequest()
			case *agentEvictCommand:
				_, err = c.buildRequest()
			case *agentBanCommand:
				_, err = c.buildRequest()
			}
			requireErrContains(t, err, "a SPIFFE ID is required (set -spiffeID)")
		})
	}
	_, err = parseCmd[*agentBanCommand](t, "agent ban", "-spiffeID", "not an id").buildRequest()
	requireErrContains(t, err, "scheme is missing or invalid")
}

func TestPrintAgents(t *testing.T) {
	exp := time.Date(2023, 7, 24, 6, 41, 28, 0, time.UTC)
	agents := &agentv1.ListAgentsResponse{Agents: []*types.Agent{
		{
			Id: sid("example.org", "/spire/agent/x509pop/bb5c"), AttestationType: "x509pop",
			X509SvidExpiresAt: exp.Unix(), X509SvidSerialNumber: "202167881933723181818267617369223000065", CanReattest: true,
		},
		{Id: sid("example.org", "/spire/agent/banned"), Banned: true},
	}}
	e, stdout, _ := newTestEnv()
	if err := printAgentList(e, outputPretty, agents); err != nil {
		t.Fatal(err)
	}
	want := "Found 2 attested agents:\n\n" +
		"SPIFFE ID         : spiffe://example.org/spire/agent/x509pop/bb5c\n" +
		"Attestation type  : x509pop\n" +
		"Expiration time   : " + time.Unix(exp.Unix(), 0).String() + "\n" +
		"Serial number     : 202167881933723181818267617369223000065\n" +
		"Can re-attest     : true\n\n" +
		"SPIFFE ID         : spiffe://example.org/spire/agent/banned\n" +
		"Attestation type  : \n" +
		"Expiration time   : " + time.Unix(0, 0).String() + "\n" +
		"Banned            : true\n" +
		"Can re-attest     : false\n\n"
	if stdout.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", stdout.String(), want)
	}

	e, stdout, _ = newTestEnv()
	_ = printAgentList(e, outputPretty, &agentv1.ListAgentsResponse{})
	if stdout.String() != "No attested agents found\n" {
		t.Fatalf("got %q", stdout.String())
	}

	// SPIRE's documented JSON for one agent.
	e, stdout, _ = newTestEnv()
	_ = printAgentList(e, outputJSON, &agentv1.ListAgentsResponse{Agents: []*types.Agent{{Id: sid("example.org", "/spire/agent/agent1"), CanReattest: true}}})
	requireJSONEq(t, `{"agents":[{"id":{"trust_domain":"example.org","path":"/spire/agent/agent1"},"attestation_type":"","x509svid_serial_number":"","x509svid_expires_at":"0","selectors":[],"banned":false,"can_reattest":true}],"next_page_token":""}`, stdout.String())
	if !strings.HasSuffix(stdout.String(), "\n") {
		t.Fatal("JSON output does not end with a newline")
	}

	e, stdout, _ = newTestEnv()
	show := &types.Agent{Id: sid("example.org", "/spire/agent/agent2"), Selectors: []*types.Selector{{Type: "k8s_psat", Value: "agent_ns:spire"}, {Type: "k8s_psat", Value: "cluster:demo"}}}
	_ = printAgentShow(e, outputPretty, show)
	if !strings.HasPrefix(stdout.String(), "Found an attested agent given its SPIFFE ID\n\nSPIFFE ID         : spiffe://example.org/spire/agent/agent2\n") ||
		!strings.HasSuffix(stdout.String(), "\nSelectors         : k8s_psat:agent_ns:spire\nSelectors         : k8s_psat:cluster:demo\n") {
		t.Fatalf("got:\n%s", stdout.String())
	}

	for n, want := range map[int32]string{0: "0 attested agents\n", 1: "1 attested agent\n"} {
		e, stdout, _ := newTestEnv()
		_ = printAgentCount(e, outputPretty, &agentv1.CountAgentsResponse{Count: n})
		if stdout.String() != want {
			t.Fatalf("got %q want %q", stdout.String(), want)
		}
	}

	e, stdout, _ = newTestEnv()
	_ = printEmpty(e, outputPretty, &emptypb.Empty{}, "Agent evicted successfully")
	if stdout.String() != "Agent evicted successfully\n" {
		t.Fatalf("got %q", stdout.String())
	}
	e, stdout, _ = newTestEnv()
	_ = printEmpty(e, outputJSON, &emptypb.Empty{}, "Agent banned successfully")
	requireJSONEq(t, `{}`, stdout.String())
}
