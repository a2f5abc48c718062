package external_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/external"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
	sysunix "golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var _ workloadapi.Attestor = (*external.Attestor)(nil)

// plugin is an SDK WorkloadAttestor: it answers from a table keyed by PID
// and, when hold is set, waits for the test before answering.
type plugin struct {
	workloadattestorv1.UnimplementedWorkloadAttestorServer
	values  map[int32][]string
	calls   chan int32
	release chan struct{}
}

func (p *plugin) Attest(ctx context.Context, req *workloadattestorv1.AttestRequest) (*workloadattestorv1.AttestResponse, error) {
	if p.calls != nil {
		p.calls <- req.Pid
	}
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	v, ok := p.values[req.Pid]
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "ohno")
	}
	return &workloadattestorv1.AttestResponse{SelectorValues: v}, nil
}

// serve runs the plugin on a Unix socket and returns a client connection to
// it, as the plugin host would hand one over.
func serve(t *testing.T, p *plugin) grpc.ClientConnInterface {
	t.Helper()
	return grpctest.Serve(t, func(srv *grpc.Server) { workloadattestorv1.RegisterWorkloadAttestorServer(srv, p) })
}

func TestAttest(t *testing.T) {
	conn := serve(t, &plugin{values: map[int32][]string{
		1: {},
		2: {"uid:1000", "label:a:b"},
	}})
	a := external.New(conn, "fake")
	tests := []struct {
		name     string
		pid      int32
		want     []string
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "no selectors", pid: 1},
		{name: "selectors typed by plugin name", pid: 2, want: []string{"uid:1000", "label:a:b"}},
		{name: "plugin error keeps its code", pid: 3, wantCode: codes.InvalidArgument, wantMsg: "workloadattestor(fake): ohno"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := a.Attest(context.Background(), tt.pid, -1)
			if tt.wantCode != codes.OK {
				st, ok := status.FromError(err)
				if !ok || st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
					t.Fatalf("err = %v, want %v %q", err, tt.wantCode, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(sel) != len(tt.want) {
				t.Fatalf("got %d selectors, want %d", len(sel), len(tt.want))
			}
			for i, s := range sel {
				if s.Type != "fake" || s.Value != tt.want[i] {
					t.Errorf("selector %d = %s:%s, want fake:%s", i, s.Type, s.Value, tt.want[i])
				}
			}
		})
	}
}

// startChild starts a real process and returns it with a pidfd on it.
func startChild(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	fd, err := sysunix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		simtest.Skip(t, "pidfd_open unavailable: "+err.Error())
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	return cmd, fd
}

// TestCallerExitsWhilePluginWorks is the PID-reuse race: the caller dies and
// is reaped while the plugin is still looking at its PID, so whatever the
// plugin answers may describe a successor. The answer must be refused, and
// the refusal must not look like the plugin's fault.
func TestCallerExitsWhilePluginWorks(t *testing.T) {
	p := &plugin{calls: make(chan int32, 1), release: make(chan struct{})}
	a := external.New(serve(t, p), "fake")
	cmd, fd := startChild(t)
	pid := int32(cmd.Process.Pid)
	p.values = map[int32][]string{pid: {"uid:0"}}

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		sel, err := a.Attest(context.Background(), pid, fd)
		done <- result{len(sel), err}
	}()
	if got := <-p.calls; got != pid {
		t.Fatalf("plugin asked about pid %d, want %d", got, pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	close(p.release)

	r := <-done
	if !errors.Is(r.err, peer.ErrExited) {
		t.Fatalf("Attest = %d selectors, %v; want ErrExited", r.n, r.err)
	}
	if _, isStatus := status.FromError(r.err); isStatus {
		t.Fatalf("refusal %v is a gRPC status: it would be blamed on the plugin", r.err)
	}
}

func TestLiveCallerWithPIDFD(t *testing.T) {
	p := &plugin{calls: make(chan int32, 1)}
	a := external.New(serve(t, p), "fake")
	cmd, fd := startChild(t)
	pid := int32(cmd.Process.Pid)
	p.values = map[int32][]string{pid: {"uid:7"}}
	sel, err := a.Attest(context.Background(), pid, fd)
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 1 || sel[0].Type != "fake" || sel[0].Value != "uid:7" {
		t.Fatalf("selectors %v", sel)
	}
}

// A caller that is gone before attestation starts is not sent to the plugin.
func TestDeadCallerNotSentToPlugin(t *testing.T) {
	p := &plugin{calls: make(chan int32, 1)}
	a := external.New(serve(t, p), "fake")
	cmd, fd := startChild(t)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := a.Attest(context.Background(), int32(cmd.Process.Pid), fd); !errors.Is(err, peer.ErrExited) {
		t.Fatalf("Attest = %v, want ErrExited", err)
	}
	select {
	case pid := <-p.calls:
		t.Fatalf("plugin was asked about dead pid %d", pid)
	default:
	}
}

func TestPluginUnavailable(t *testing.T) {
	conn, err := grpc.NewClient("unix://"+filepath.Join(t.TempDir(), "none.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = external.New(conn, "fake").Attest(context.Background(), 1, -1)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
}
