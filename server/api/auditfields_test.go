package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/spiffe-hw/spire-hw/server/servertest"
)

// TestAuditServiceFields: the bundle and entry calls' audit lines carry
// the request fields SPIRE's services add (trust_domain_id, entry_id, the
// appended authorities by index and SHA-256), on success and on error.
func TestAuditServiceFields(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := s.Admin(t)

	if _, err := bundlev1.NewBundleClient(admin).GetBundle(ctx, &bundlev1.GetBundleRequest{}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", "method=GetBundle", "status=success", "trust_domain_id=example.org")

	_, err := entryv1.NewEntryClient(admin).GetEntry(ctx, &entryv1.GetEntryRequest{Id: "no-such-entry"})
	if err == nil {
		t.Fatal("GetEntry of a missing entry succeeded")
	}
	logs.waitLine(t, "API accessed", "method=GetEntry", "status=error", "entry_id=no-such-entry")

	junk := []byte("not a certificate")
	sum := sha256.Sum256(junk)
	_, err = bundlev1.NewBundleClient(admin).AppendBundle(ctx, &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: junk}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "kid-1", PublicKey: junk, ExpiresAt: 42}},
	})
	if err == nil {
		t.Fatal("AppendBundle of junk succeeded")
	}
	logs.waitLine(t, "API accessed", "method=AppendBundle", "status=error",
		"x509_authorities_asn1_sha256.0="+hex.EncodeToString(sum[:]), "jwt_authority_key_id.0=kid-1",
		"jwt_authority_expires_at.0=42", "jwt_authority_public_key_sha256.0="+hex.EncodeToString(sum[:]))
}

// TestAuditFederatedBundleBatches: each federated-bundle batch gives one
// audit line per bundle with that bundle's status and SPIRE's fields
// (trust_domain_id, refresh_hint, sequence_number, authorities by index
// and SHA-256; trust_domain_id and mode for a delete).
func TestAuditFederatedBundleBatches(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := bundlev1.NewBundleClient(s.Admin(t))
	der := selfSignedDER(t)
	sum := sha256.Sum256(der)
	certSum := hex.EncodeToString(sum[:])
	fed := &types.Bundle{TrustDomain: "other.org", RefreshHint: 60, X509Authorities: []*types.X509Certificate{{Asn1: der}}}

	if _, err := c.BatchCreateFederatedBundle(ctx, &bundlev1.BatchCreateFederatedBundleRequest{Bundle: []*types.Bundle{
		fed, {TrustDomain: "example.org", X509Authorities: fed.X509Authorities},
	}}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", "method=BatchCreateFederatedBundle", "status=success", "trust_domain_id=other.org",
		"refresh_hint=60", "sequence_number=0", "x509_authorities_asn1_sha256.0="+certSum)
	logs.waitLine(t, "API accessed", "method=BatchCreateFederatedBundle", "status=error", "status_code=InvalidArgument", "trust_domain_id=example.org")

	if _, err := c.BatchSetFederatedBundle(ctx, &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{
		{TrustDomain: "third.org", SequenceNumber: 7, X509Authorities: fed.X509Authorities},
	}}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", "method=BatchSetFederatedBundle", "status=success", "trust_domain_id=third.org", "sequence_number=7")

	// An update logs only what its input mask selects.
	if _, err := c.BatchUpdateFederatedBundle(ctx, &bundlev1.BatchUpdateFederatedBundleRequest{
		Bundle:    []*types.Bundle{{TrustDomain: "other.org", RefreshHint: 120, X509Authorities: fed.X509Authorities}, {TrustDomain: "missing.org"}},
		InputMask: &types.BundleMask{RefreshHint: true},
	}); err != nil {
		t.Fatal(err)
	}
	l := logs.waitLine(t, "API accessed", "method=BatchUpdateFederatedBundle", "status=success", "trust_domain_id=other.org", "refresh_hint=120")
	if strings.Contains(l, "sequence_number=") || strings.Contains(l, "x509_authorities_asn1_sha256") {
		t.Errorf("an update logs fields its mask leaves out: %s", l)
	}
	logs.waitLine(t, "API accessed", "method=BatchUpdateFederatedBundle", "status=error", "status_code=NotFound", "trust_domain_id=missing.org")

	if _, err := c.BatchDeleteFederatedBundle(ctx, &bundlev1.BatchDeleteFederatedBundleRequest{
		TrustDomains: []string{"other.org", "third.org", "missing.org"}, Mode: bundlev1.BatchDeleteFederatedBundleRequest_DELETE,
	}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", "method=BatchDeleteFederatedBundle", "status=error", "status_code=NotFound", "trust_domain_id=missing.org", "mode=DELETE")
	for _, m := range []string{"BatchCreateFederatedBundle", "BatchSetFederatedBundle", "BatchUpdateFederatedBundle", "BatchDeleteFederatedBundle"} {
		want := map[string]int{"BatchCreateFederatedBundle": 2, "BatchSetFederatedBundle": 1, "BatchUpdateFederatedBundle": 2, "BatchDeleteFederatedBundle": 3}[m]
		if n := len(logs.lines("API accessed", "method="+m+" ")); n != want {
			t.Errorf("%s: %d audit lines, want one per item (%d)", m, n, want)
		}
	}
	if n := len(logs.lines("API accessed", "method=BatchDeleteFederatedBundle", "status=success", "mode=DELETE")); n != 2 {
		t.Errorf("%d successful delete lines, want 2", n)
	}
}

// TestAuditFilters: ListAgents, CountAgents, ListEntries and CountEntries
// audit their filters under SPIRE's field names; AttestAgent's line names
// the attested agent.
func TestAuditFilters(t *testing.T) {
	logs := &logBuffer{}
	s := servertest.Start(t, servertest.Options{Log: logs, ServerExtra: "audit_log_enabled = true"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := s.Admin(t)
	agent := s.NewAgent(t)
	logs.waitLine(t, "API accessed", "method=AttestAgent", "status=success", "node_attestor_type=join_token", "agent_id="+agent.ID.String())

	sels := &types.SelectorMatch{Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}, {Type: "k8s", Value: "ns:a"}}, Match: types.SelectorMatch_MATCH_SUPERSET}
	ac := agentv1.NewAgentClient(admin)
	if _, err := ac.ListAgents(ctx, &agentv1.ListAgentsRequest{Filter: &agentv1.ListAgentsRequest_Filter{
		ByAttestationType: "join_token", ByBanned: wrapperspb.Bool(false), ByCanReattest: wrapperspb.Bool(true), BySelectorMatch: sels,
	}}); err != nil {
		t.Fatal(err)
	}
	agentFields := []string{"node_attestor_type=join_token", "by_banned=false", "by_can_reattest=true",
		"by_selector_match=MATCH_SUPERSET", "by_selectors=unix:uid:1,k8s:ns:a"}
	logs.waitLine(t, "API accessed", append([]string{"method=ListAgents", "status=success"}, agentFields...)...)
	if _, err := ac.CountAgents(ctx, &agentv1.CountAgentsRequest{Filter: &agentv1.CountAgentsRequest_Filter{
		ByAttestationType: "join_token", ByBanned: wrapperspb.Bool(false), ByCanReattest: wrapperspb.Bool(true), BySelectorMatch: sels,
	}}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", append([]string{"method=CountAgents", "status=success"}, agentFields...)...)

	ec := entryv1.NewEntryClient(admin)
	fed := &types.FederatesWithMatch{TrustDomains: []string{"a.org", "b.org"}, Match: types.FederatesWithMatch_MATCH_ANY}
	if _, err := ec.ListEntries(ctx, &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{
		ByHint: wrapperspb.String("web"), ByParentId: idOf(agent.ID), BySpiffeId: pid("/w"), BySelectors: sels,
		ByFederatesWith: fed, ByDownstream: wrapperspb.Bool(true),
	}}); err != nil {
		t.Fatal(err)
	}
	entryFields := []string{"hint=web", "parent_id=" + agent.ID.String(), "spiffe_id=spiffe://example.org/w",
		"by_selector_match=MATCH_SUPERSET", "by_selectors=unix:uid:1,k8s:ns:a", "federates_with_match=MATCH_ANY",
		"federates_with=a.org,b.org", "downstream=true"}
	logs.waitLine(t, "API accessed", append([]string{"method=ListEntries", "status=success"}, entryFields...)...)
	if _, err := ec.CountEntries(ctx, &entryv1.CountEntriesRequest{Filter: &entryv1.CountEntriesRequest_Filter{
		ByHint: wrapperspb.String("web"), ByParentId: idOf(agent.ID), BySpiffeId: pid("/w"), BySelectors: sels,
		ByFederatesWith: fed, ByDownstream: wrapperspb.Bool(true),
	}}); err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, "API accessed", append([]string{"method=CountEntries", "status=success"}, entryFields...)...)

	// An ID outside the trust domain is not audited as if it were a
	// member (SPIRE leaves out what it cannot parse into its domain).
	_, _ = ec.ListEntries(ctx, &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{
		ByParentId: &types.SPIFFEID{TrustDomain: "other.org", Path: "/x"}, ByHint: wrapperspb.String("foreign"),
	}})
	if l := logs.waitLine(t, "API accessed", "method=ListEntries", "hint=foreign"); strings.Contains(l, "parent_id=") {
		t.Errorf("a foreign parent ID audited: %s", l)
	}
}
