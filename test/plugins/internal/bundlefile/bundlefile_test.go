package bundlefile

import (
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func configure(f *File, hcl string) error {
	_, _, err := f.Configure(&configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return err
}

func TestAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var f File
	bundle := &types.Bundle{TrustDomain: "example.org", X509Authorities: []*types.X509Certificate{{Asn1: []byte("root")}}, SequenceNumber: 7}
	if err := f.Append("loaded", bundle); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Append before Configure = %v, want FailedPrecondition", err)
	}
	if err := configure(&f, `path = "`+path+`"`); err != nil {
		t.Fatal(err)
	}
	if err := f.Append("loaded", nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Append(nil bundle) = %v, want InvalidArgument", err)
	}
	for _, event := range []string{"loaded", "updated"} {
		if err := f.Append(event, bundle); err != nil {
			t.Fatal(err)
		}
	}
	lines, err := bundlelog.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Event != "loaded" || lines[1].Event != "updated" || lines[1].SequenceNumber != 7 {
		t.Fatalf("lines = %+v", lines)
	}
}

func TestAppendToUnwritablePath(t *testing.T) {
	var f File
	if err := configure(&f, `path = "`+filepath.Join(t.TempDir(), "no", "such", "dir")+`"`); err != nil {
		t.Fatal(err)
	}
	if err := f.Append("published", &types.Bundle{TrustDomain: "example.org"}); status.Code(err) != codes.Internal {
		t.Fatalf("Append = %v, want Internal", err)
	}
}

func TestConfigureRefusals(t *testing.T) {
	for _, hcl := range []string{``, "path = \"/tmp/x\"\nfail_configure = true", `path = "unterminated`} {
		var f File
		if err := configure(&f, hcl); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Configure(%q) = %v, want InvalidArgument", hcl, err)
		}
		if err := f.Append("loaded", &types.Bundle{}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("after Configure(%q), Append = %v, want FailedPrecondition", hcl, err)
		}
	}
}
