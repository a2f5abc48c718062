package facade_test

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
)

// An adapter wraps what its plugin returned and makes its own refusals with
// the same prefix; the gRPC code stays the plugin's.
func ExampleFacade() {
	f := facade.Facade{Type: "keymanager", Name: "hsm"}

	fromPlugin := status.Error(codes.NotFound, "hsm: no such key")
	st := status.Convert(f.WrapErr(fromPlugin))
	fmt.Println(st.Code(), st.Message())

	st = status.Convert(f.Errorf(codes.Internal, "plugin response empty for key %q", "A"))
	fmt.Println(st.Code(), st.Message())
	// Output:
	// NotFound keymanager(hsm): no such key
	// Internal keymanager(hsm): plugin response empty for key "A"
}
