package federation

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzParseBundle feeds ParseBundle what a hostile endpoint could serve:
// it must answer in bounded time without panicking, and a bundle it
// accepts must have X.509 authorities of b.test only and survive the
// conversion to the stored type and back.
func FuzzParseBundle(f *testing.F) {
	ca := newTestCA(f, "b.test")
	sb, err := bundleFromProto(ca.bundle(f, "b.test", 3))
	if err != nil {
		f.Fatal(err)
	}
	sb.SetRefreshHint(300e9)
	valid, err := sb.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC"}],"spiffe_refresh_hint":-1,"spiffe_sequence":18446744073709551615}`))
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kid":"","kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Add([]byte(`{"spiffe_refresh_hint":9223372036854775807,"keys":[]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(tdB, data)
		if err != nil {
			return
		}
		if len(b.X509Authorities()) == 0 {
			t.Fatal("accepted a bundle without X.509 authorities")
		}
		for _, c := range b.X509Authorities() {
			if err := checkAuthorityDomain(tdB, c); err != nil {
				t.Fatalf("accepted a foreign authority: %v", err)
			}
		}
		pb, err := bundleToProto(b)
		if err != nil {
			return // a JWT key type the stored form cannot hold
		}
		back, err := bundleFromProto(pb)
		if err != nil {
			t.Fatalf("stored form of an accepted bundle does not load: %v", err)
		}
		pb2, err := bundleToProto(back)
		if err != nil || !proto.Equal(pb, pb2) {
			t.Fatalf("round trip changed the bundle: %v", err)
		}
	})
}
