package facade_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/plugin/facade"
)

var errPlain = errors.New("disk on fire")

func withDetail(t *testing.T, code codes.Code, msg, detail string) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(wrapperspb.String(detail))
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestWrapErr(t *testing.T) {
	f := facade.Facade{Type: "keymanager", Name: "hsm"}
	prefixed := status.Error(codes.NotFound, "keymanager(hsm): no such key")
	plainPrefixed := errors.New("keymanager(hsm): already said")

	for _, tc := range []struct {
		name     string
		f        facade.Facade
		in       error
		wantNil  bool
		wantMsg  string
		wantCode codes.Code // checked only for status errors
		isStatus bool
		wantIs   error // errors.Is(out, wantIs) must hold
		wantSame bool  // out must be in itself
	}{
		{name: "nil", f: f, in: nil, wantNil: true},
		{name: "status", f: f, in: status.Error(codes.NotFound, "no such key"),
			wantMsg: "keymanager(hsm): no such key", wantCode: codes.NotFound, isStatus: true},
		{name: "status keeps Unknown", f: f, in: status.Error(codes.Unknown, "boom"),
			wantMsg: "keymanager(hsm): boom", wantCode: codes.Unknown, isStatus: true},
		{name: "plugin's own name prefix replaced", f: f, in: status.Error(codes.Internal, "hsm: token gone"),
			wantMsg: "keymanager(hsm): token gone", wantCode: codes.Internal, isStatus: true},
		{name: "another name's prefix kept", f: f, in: status.Error(codes.Internal, "disk: token gone"),
			wantMsg: "keymanager(hsm): disk: token gone", wantCode: codes.Internal, isStatus: true},
		{name: "already prefixed status returned as is", f: f, in: prefixed,
			wantMsg: "keymanager(hsm): no such key", wantCode: codes.NotFound, isStatus: true, wantSame: true},
		{name: "type lower-cased as SPIRE does", f: facade.Facade{Type: "KeyManager", Name: "hsm"},
			in:      status.Error(codes.NotFound, "no such key"),
			wantMsg: "keymanager(hsm): no such key", wantCode: codes.NotFound, isStatus: true},
		// grpc's status.FromError gives a wrapped status the whole text
		// of the error as its message; SPIRE's facade prefixes that too.
		{name: "wrapped status: whole text prefixed, code kept", f: f,
			in:      fmt.Errorf("call plugin: %w", status.Error(codes.PermissionDenied, "no")),
			wantMsg: "keymanager(hsm): call plugin: rpc error: code = PermissionDenied desc = no", wantCode: codes.PermissionDenied, isStatus: true},
		{name: "plain error wrapped", f: f, in: errPlain,
			wantMsg: "keymanager(hsm): disk on fire", wantIs: errPlain},
		{name: "plain error keeps the plugin's name prefix", f: f, in: errors.New("hsm: gone"),
			wantMsg: "keymanager(hsm): hsm: gone"},
		{name: "already prefixed plain error returned as is", f: f, in: plainPrefixed,
			wantMsg: "keymanager(hsm): already said", wantSame: true},
		{name: "context error wrapped", f: facade.Facade{Type: "svidstore", Name: "vault"}, in: context.Canceled,
			wantMsg: "svidstore(vault): context canceled", wantIs: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := tc.f.WrapErr(tc.in)
			if tc.wantNil {
				if out != nil {
					t.Fatalf("WrapErr(nil) = %v, want nil", out)
				}
				return
			}
			if out == nil {
				t.Fatal("WrapErr returned nil")
			}
			if tc.wantSame && out != tc.in {
				t.Fatalf("WrapErr = %#v, want the input itself", out)
			}
			if tc.wantIs != nil && !errors.Is(out, tc.wantIs) {
				t.Fatalf("errors.Is(%v, %v) = false", out, tc.wantIs)
			}
			st, ok := status.FromError(out)
			if tc.isStatus {
				if !ok {
					t.Fatalf("WrapErr = %v, want a status", out)
				}
				if st.Code() != tc.wantCode || st.Message() != tc.wantMsg {
					t.Fatalf("WrapErr = %v %q, want %v %q", st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
				}
			} else if out.Error() != tc.wantMsg {
				t.Fatalf("WrapErr = %q, want %q", out.Error(), tc.wantMsg)
			}
			// Wrapping twice changes nothing.
			if again := tc.f.WrapErr(out); again.Error() != out.Error() {
				t.Fatalf("WrapErr twice = %q, want %q", again.Error(), out.Error())
			}
		})
	}
}

func TestWrapErrKeepsDetails(t *testing.T) {
	f := facade.Facade{Type: "nodeattestor", Name: "tpm"}
	out := f.WrapErr(withDetail(t, codes.PermissionDenied, "bad quote", "pcr 7"))
	st := status.Convert(out)
	if st.Code() != codes.PermissionDenied || st.Message() != "nodeattestor(tpm): bad quote" {
		t.Fatalf("WrapErr = %v %q", st.Code(), st.Message())
	}
	if d := st.Details(); len(d) != 1 || !proto.Equal(d[0].(proto.Message), wrapperspb.String("pcr 7")) {
		t.Fatalf("details = %v, want [pcr 7]", d)
	}
}

func TestErrorf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		f      facade.Facade
		code   codes.Code
		format string
		args   []any
		want   string
	}{
		{"no args", facade.Facade{Type: "notifier", Name: "k8s"}, codes.InvalidArgument, "bundle is invalid",
			nil, "notifier(k8s): bundle is invalid"},
		{"args", facade.Facade{Type: "keymanager", Name: "hsm"}, codes.Internal, "plugin response has unexpected key id %q for key %q",
			[]any{"b", "a"}, `keymanager(hsm): plugin response has unexpected key id "b" for key "a"`},
		{"error arg", facade.Facade{Type: "upstreamauthority", Name: "vault"}, codes.Internal, "failed to parse: %v",
			[]any{errPlain}, "upstreamauthority(vault): failed to parse: disk on fire"},
		{"type lower-cased", facade.Facade{Type: "BundlePublisher", Name: "s3"}, codes.Internal, "x",
			nil, "bundlepublisher(s3): x"},
		{"percent in name printed as is", facade.Facade{Type: "svidstore", Name: "a%db"}, codes.Unavailable, "down %d",
			[]any{3}, "svidstore(a%db): down 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, ok := status.FromError(tc.f.Errorf(tc.code, tc.format, tc.args...))
			if !ok || st.Code() != tc.code || st.Message() != tc.want {
				t.Fatalf("Errorf = %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.want)
			}
		})
	}
}

// failingHealth answers every Check with a status that has details, as a
// plugin's refusal would.
type failingHealth struct {
	healthpb.UnimplementedHealthServer
	err error
}

func (h failingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return nil, h.err
}

// TestWrapErrOverTheWire wraps what a gRPC client really receives: the code
// and details that crossed a socket survive the prefixing.
func TestWrapErrOverTheWire(t *testing.T) {
	fail := failingHealth{err: withDetail(t, codes.NotFound, "w1: no such workload", "pid 42")}
	conn := grpctest.Serve(t, func(srv *grpc.Server) { healthpb.RegisterHealthServer(srv, fail) })

	_, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	st := status.Convert(facade.Facade{Type: "workloadattestor", Name: "w1"}.WrapErr(err))
	if st.Code() != codes.NotFound || st.Message() != "workloadattestor(w1): no such workload" {
		t.Fatalf("WrapErr = %v %q", st.Code(), st.Message())
	}
	if d := st.Details(); len(d) != 1 || !proto.Equal(d[0].(proto.Message), wrapperspb.String("pid 42")) {
		t.Fatalf("details = %v, want [pid 42]", d)
	}
}
