package external

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Attestor is an external node attestor. It implements
// nodeattestor.Attestor. One attestation runs at a time.
type Attestor struct {
	name   string
	client nodeattestorv1.NodeAttestorClient
	f      facade.Facade

	mu     sync.Mutex
	stream nodeattestorv1.NodeAttestor_AidAttestationClient
	cancel context.CancelFunc
}

// New returns an Attestor over the plugin behind conn, loaded under name,
// which is also the attestation type the server's verifier must have.
func New(conn grpc.ClientConnInterface, name string) *Attestor {
	return &Attestor{
		name:   name,
		client: nodeattestorv1.NewNodeAttestorClient(conn),
		f:      facade.Facade{Type: "nodeattestor", Name: name},
	}
}

// Type is the plugin's name: SPIRE sends it as the attestation data type.
func (a *Attestor) Type() string { return a.name }

// AttestationData starts an attestation: it opens the plugin's stream, which
// lives until Done, ctx ends or AttestationData is called again, and returns
// the payload the plugin sends first. The CSR is not passed on: the plugin
// SDK's agent NodeAttestor protocol has no field for it, as in SPIRE.
func (a *Attestor) AttestationData(ctx context.Context, _ []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked()

	ctx, cancel := context.WithCancel(ctx)
	stream, err := a.client.AidAttestation(ctx)
	if err != nil {
		cancel()
		return nil, a.f.WrapErr(err)
	}
	resp, err := stream.Recv()
	switch {
	case errors.Is(err, io.EOF):
		cancel()
		return nil, a.f.Errorf(codes.Internal, "plugin closed stream before returning attestation data")
	case err != nil:
		cancel()
		return nil, a.f.WrapErr(err)
	}
	payload := resp.GetPayload()
	if len(payload) == 0 {
		cancel()
		return nil, a.f.Errorf(codes.Internal, "plugin response missing attestation payload")
	}
	a.stream, a.cancel = stream, cancel
	return payload, nil
}

// Respond relays a server challenge to the plugin and returns its answer.
func (a *Attestor) Respond(ctx context.Context, challenge []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stream == nil {
		return nil, a.f.Errorf(codes.FailedPrecondition, "challenge received outside an attestation")
	}
	// The stream's context is the one AttestationData got; ctx bounds this
	// round only.
	type result struct {
		resp *nodeattestorv1.PayloadOrChallengeResponse
		err  error
	}
	ch := make(chan result, 1)
	stream := a.stream
	go func() {
		if err := stream.Send(&nodeattestorv1.Challenge{Challenge: challenge}); err != nil {
			ch <- result{err: err}
			return
		}
		resp, err := stream.Recv()
		ch <- result{resp, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		// Cancelling the stream unblocks the goroutine above; only then
		// may CloseSend run, since it must not race with Send.
		a.cancel()
		<-ch
		a.closeLocked()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	switch {
	case errors.Is(r.err, io.EOF):
		a.closeLocked()
		return nil, a.f.Errorf(codes.Internal, "plugin closed stream before handling the challenge")
	case r.err != nil:
		a.closeLocked()
		return nil, a.f.WrapErr(r.err)
	}
	answer := r.resp.GetChallengeResponse()
	if len(answer) == 0 {
		a.closeLocked()
		return nil, a.f.Errorf(codes.Internal, "plugin response missing challenge response")
	}
	return answer, nil
}

// Done ends the attestation in progress, if any, and tells the plugin so by
// closing its stream. It is safe to call at any time.
func (a *Attestor) Done() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked()
}

func (a *Attestor) closeLocked() {
	if a.stream == nil {
		return
	}
	// CloseSend lets a plugin waiting for a challenge see the end of the
	// stream; cancel releases the stream whatever the plugin does.
	_ = a.stream.CloseSend()
	a.cancel()
	a.stream, a.cancel = nil, nil
}
