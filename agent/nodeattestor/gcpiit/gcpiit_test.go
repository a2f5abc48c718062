package gcpiit

import (
	"context"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/cloud"
)

func TestAttestationData(t *testing.T) {
	s, err := cloud.StartGCP(cloud.GCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := New(PluginData{IdentityTokenHost: s.MetadataHost()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.AttestationData(context.Background(), nil)
	if err != nil || strings.Count(string(b), ".") != 2 {
		t.Fatalf("payload %q: %v", b, err)
	}
	other, _ := New(PluginData{IdentityTokenHost: s.MetadataHost(), ServiceAccount: "someone-else@example.iam.gserviceaccount.com"})
	if _, err := other.AttestationData(context.Background(), nil); err == nil {
		t.Fatal("token for an unknown service account")
	}
	if _, err := New(PluginData{IdentityTokenHost: "evil.example/path"}); err == nil {
		t.Fatal("host with a path accepted")
	}
	if _, err := a.Respond(context.Background(), nil); err == nil {
		t.Fatal("challenge answered")
	}
}
