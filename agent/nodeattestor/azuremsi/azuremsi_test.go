package azuremsi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/cloud"
)

func TestAttestationData(t *testing.T) {
	s, err := cloud.StartAzure(cloud.AzureConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := New(PluginData{IMDSEndpoint: s.IMDSEndpoint()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var d AttestationData
	if err := json.Unmarshal(b, &d); err != nil || strings.Count(d.Token, ".") != 2 {
		t.Fatalf("payload %s: %v", b, err)
	}
	if _, err := a.Respond(context.Background(), nil); err == nil {
		t.Fatal("challenge answered")
	}
	if _, err := New(PluginData{IMDSEndpoint: "ftp://x"}); err == nil {
		t.Fatal("non-HTTP endpoint accepted")
	}
}
