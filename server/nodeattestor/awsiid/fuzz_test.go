package awsiid

import (
	"crypto/x509"
	"encoding/json"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/cloud"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzVerifyPayload: the payload comes from an unauthenticated agent. No
// input may panic, and anything accepted must carry a document signed
// by the configured key.
func FuzzVerifyPayload(f *testing.F) {
	signer, err := cloud.NewAWSSigner("us-east-1")
	if err != nil {
		f.Fatal(err)
	}
	cert, err := parseCertPEM(signer.CertPEM())
	if err != nil {
		f.Fatal(err)
	}
	doc := `{"accountId":"1","availabilityZone":"us-east-1a","imageId":"ami-1","instanceId":"i-1","region":"us-east-1"}`
	sig, err := signer.Sign([]byte(doc))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(payload{Document: doc, SignatureRSA2048: sig})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"document":"{}","rsa2048":"MIIB"}`))
	f.Add([]byte(`{"document":` + string(mustMarshal(doc)) + `,"rsa2048":"MAA="}`))
	f.Add([]byte("\x00"))
	a := &Attestor{cfg: Config{RegionCerts: map[string]*x509.Certificate{"us-east-1": cert}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := a.VerifyPayload(b)
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.PermissionDenied {
				t.Fatalf("code %v for %q", c, b)
			}
			return
		}
		if d.InstanceID != "i-1" || d.Region != "us-east-1" {
			t.Fatalf("accepted a document that was not signed: %+v", d)
		}
	})
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
