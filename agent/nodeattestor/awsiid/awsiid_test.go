package awsiid

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/cloud"
)

func TestAttestationData(t *testing.T) {
	s, err := cloud.StartAWS(cloud.AWSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := New(PluginData{EC2MetadataEndpoint: s.IMDSEndpoint() + "/"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.AttestationData(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var d AttestationData
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Document != string(s.Document()) || d.SignatureRSA2048 == "" || s.TokenRequests() != 1 {
		t.Fatalf("payload %+v, %d IMDSv2 tokens", d, s.TokenRequests())
	}
	if _, err := a.Respond(context.Background(), []byte("x")); err == nil {
		t.Fatal("challenge answered")
	}
	if _, err := New(PluginData{EC2MetadataEndpoint: "169.254.169.254"}); err == nil {
		t.Fatal("endpoint without scheme accepted")
	}
	bad, _ := New(PluginData{EC2MetadataEndpoint: s.IMDSEndpoint() + "/nope"})
	if _, err := bad.AttestationData(context.Background(), nil); err == nil {
		t.Fatal("404 from IMDS accepted")
	}
}
