package external

import (
	"context"
	"fmt"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
	"google.golang.org/grpc"
)

// Attestor is an external workload attestor. It implements
// workloadapi.Attestor.
type Attestor struct {
	name   string
	client workloadattestorv1.WorkloadAttestorClient
	f      facade.Facade
}

// New returns an Attestor that asks the plugin behind conn, which is loaded
// under name (the plugin's name in the agent's configuration and the type of
// every selector it produces).
func New(conn grpc.ClientConnInterface, name string) *Attestor {
	return &Attestor{
		name:   name,
		client: workloadattestorv1.NewWorkloadAttestorClient(conn),
		f:      facade.Facade{Type: "workloadattestor", Name: name},
	}
}

// Name is the plugin's name, the type of its selectors.
func (a *Attestor) Name() string { return a.name }

// Attest asks the plugin for the selectors of pid. pidfd must refer to the
// same process (pass -1 only where no pidfd exists; the PID-reuse check is
// then skipped). An error that is a gRPC status came from the plugin and
// keeps its code; any other error is about the caller.
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	// A caller that is already gone is not worth a round trip, and its PID
	// may be someone else's already.
	if err := a.checkCaller(pid, pidfd); err != nil {
		return nil, err
	}
	resp, err := a.client.Attest(ctx, &workloadattestorv1.AttestRequest{Pid: pid})
	if err != nil {
		return nil, a.f.WrapErr(err)
	}
	// The plugin looked the PID up by number while it worked; if the
	// caller died meanwhile, the PID may have been reused and the answer
	// may describe the successor.
	if err := a.checkCaller(pid, pidfd); err != nil {
		return nil, err
	}
	selectors := make([]*types.Selector, 0, len(resp.GetSelectorValues()))
	for _, v := range resp.GetSelectorValues() {
		selectors = append(selectors, &types.Selector{Type: a.name, Value: v})
	}
	return selectors, nil
}

func (a *Attestor) checkCaller(pid int32, pidfd int) error {
	if pidfd < 0 {
		return nil
	}
	if err := peer.CheckPIDFD(pidfd); err != nil {
		return fmt.Errorf("external workloadattestor %q: caller pid %d: %w", a.name, pid, err)
	}
	return nil
}
