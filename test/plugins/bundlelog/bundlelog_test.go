package bundlelog

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
)

func TestAppendAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	bundle := &types.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: []*types.X509Certificate{{Asn1: []byte("a")}, {Asn1: []byte("b")}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "k"}},
		SequenceNumber:  7,
	}
	if err := Append(path, "loaded", bundle); err != nil {
		t.Fatal(err)
	}
	if err := Append(path, "updated", &types.Bundle{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 2 {
		t.Fatalf("%d lines, want 2:\n%s", n, data)
	}
	lines, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	sa, sb := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	want := []Line{
		{Event: "loaded", TrustDomain: "example.org", X509Authorities: 2, JWTAuthorities: 1, SequenceNumber: 7,
			X509SHA256: []string{hex.EncodeToString(sa[:]), hex.EncodeToString(sb[:])}},
		{Event: "updated", TrustDomain: "example.org", X509SHA256: []string{}},
	}
	if !reflect.DeepEqual(lines, want) {
		t.Fatalf("lines = %+v\nwant %+v", lines, want)
	}
}
