package external_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/external"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var _ nodeattestor.Attestor = (*external.Attestor)(nil)

// plugin is an SDK NodeAttestor that proves possession of a P-256 key: the
// payload is its public key, and each challenge is answered with a
// signature over it. mode makes it misbehave in one of SPIRE's checked
// ways.
type plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	key  *ecdsa.PrivateKey
	mode string
	// ended receives how each stream ended, as the plugin saw it.
	ended chan string
	// gotChallenge is signalled (when set) as each challenge arrives.
	gotChallenge chan struct{}
}

func (p *plugin) AidAttestation(stream nodeattestorv1.NodeAttestor_AidAttestationServer) (err error) {
	defer func() {
		how := "returned"
		switch {
		case err != nil:
			how = "error"
		case stream.Context().Err() != nil:
			how = "canceled"
		}
		p.ended <- how
	}()
	payload, err := x509.MarshalPKIXPublicKey(p.key.Public())
	if err != nil {
		return err
	}
	switch p.mode {
	case "fail":
		return status.Error(codes.PermissionDenied, "no identity document")
	case "close before payload":
		return nil
	case "empty payload":
		payload = nil
	case "challenge response first":
		return stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{Data: &nodeattestorv1.PayloadOrChallengeResponse_ChallengeResponse{ChallengeResponse: []byte("x")}})
	}
	if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{Data: &nodeattestorv1.PayloadOrChallengeResponse_Payload{Payload: payload}}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			p.ended <- "eof"
			return nil
		}
		if err != nil {
			return nil // canceled: reported by the deferred check
		}
		if p.gotChallenge != nil {
			p.gotChallenge <- struct{}{}
		}
		switch p.mode {
		case "close before answer":
			return nil
		case "empty answer":
			if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{}); err != nil {
				return err
			}
			continue
		case "hang":
			<-stream.Context().Done()
			return nil
		}
		digest := sha256.Sum256(req.Challenge)
		sig, err := ecdsa.SignASN1(rand.Reader, p.key, digest[:])
		if err != nil {
			return err
		}
		if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{Data: &nodeattestorv1.PayloadOrChallengeResponse_ChallengeResponse{ChallengeResponse: sig}}); err != nil {
			return err
		}
	}
}

func newPlugin(t *testing.T, mode string) *plugin {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &plugin{key: key, mode: mode, ended: make(chan string, 4)}
}

func serve(t *testing.T, p *plugin) grpc.ClientConnInterface {
	t.Helper()
	return grpctest.Serve(t, func(srv *grpc.Server) { nodeattestorv1.RegisterNodeAttestorServer(srv, p) })
}

// wantEnd waits for the plugin's stream to end one of the given ways.
func wantEnd(t *testing.T, p *plugin, ways ...string) {
	t.Helper()
	got := <-p.ended
	if got == "eof" {
		got += "+" + <-p.ended
	}
	for _, w := range ways {
		if got == w {
			return
		}
	}
	t.Fatalf("plugin stream ended %q, want one of %q", got, ways)
}

func TestChallengesOverOneStream(t *testing.T) {
	p := newPlugin(t, "")
	a := external.New(serve(t, p), "fake")
	if a.Type() != "fake" {
		t.Fatalf("Type = %q", a.Type())
	}
	ctx := context.Background()
	payload, err := a.AttestationData(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(payload)
	if err != nil {
		t.Fatal(err)
	}
	for _, nonce := range []string{"nonce-1", "nonce-2", "nonce-3"} {
		sig, err := a.Respond(ctx, []byte(nonce))
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte(nonce))
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatalf("answer to %q does not verify with the payload's key", nonce)
		}
	}
	a.Done()
	// The plugin sees a clean end of stream, not a cancellation.
	wantEnd(t, p, "eof+returned", "eof+canceled")
	if _, err := a.Respond(ctx, []byte("late")); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Respond after Done = %v, want FailedPrecondition", err)
	}
	a.Done() // idempotent
}

func TestFacadeChecks(t *testing.T) {
	tests := []struct {
		mode          string
		wantDataErr   bool
		wantCode      codes.Code
		wantMsg       string
		wantPluginEnd []string
	}{
		{mode: "fail", wantDataErr: true, wantCode: codes.PermissionDenied, wantMsg: "nodeattestor(fake): no identity document"},
		{mode: "close before payload", wantDataErr: true, wantCode: codes.Internal, wantMsg: "nodeattestor(fake): plugin closed stream before returning attestation data"},
		{mode: "empty payload", wantDataErr: true, wantCode: codes.Internal, wantMsg: "nodeattestor(fake): plugin response missing attestation payload"},
		{mode: "challenge response first", wantDataErr: true, wantCode: codes.Internal, wantMsg: "nodeattestor(fake): plugin response missing attestation payload"},
		{mode: "close before answer", wantCode: codes.Internal, wantMsg: "nodeattestor(fake): plugin closed stream before handling the challenge"},
		{mode: "empty answer", wantCode: codes.Internal, wantMsg: "nodeattestor(fake): plugin response missing challenge response"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			p := newPlugin(t, tt.mode)
			a := external.New(serve(t, p), "fake")
			ctx := context.Background()
			_, err := a.AttestationData(ctx, nil)
			if !tt.wantDataErr {
				if err != nil {
					t.Fatal(err)
				}
				_, err = a.Respond(ctx, []byte("nonce"))
			}
			st, ok := status.FromError(err)
			if !ok || st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Fatalf("err = %v, want %v %q", err, tt.wantCode, tt.wantMsg)
			}
			<-p.ended
			a.Done()
		})
	}
}

// A second attestation closes the first one's stream.
func TestAttestationDataAgainClosesPreviousStream(t *testing.T) {
	p := newPlugin(t, "")
	a := external.New(serve(t, p), "fake")
	ctx := context.Background()
	if _, err := a.AttestationData(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AttestationData(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wantEnd(t, p, "eof+returned", "eof+canceled")
	if _, err := a.Respond(ctx, []byte("nonce")); err != nil {
		t.Fatalf("second stream unusable: %v", err)
	}
	a.Done()
	wantEnd(t, p, "eof+returned", "eof+canceled")
}

// The stream is bound to the context of AttestationData: when the caller's
// attestation context ends, the plugin is released even without Done.
func TestContextEndReleasesPlugin(t *testing.T) {
	p := newPlugin(t, "")
	a := external.New(serve(t, p), "fake")
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := a.AttestationData(ctx, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	wantEnd(t, p, "canceled", "returned")
}

// A challenge the plugin never answers is abandoned when Respond's context
// ends, and the stream is closed.
func TestRespondContextEnds(t *testing.T) {
	p := newPlugin(t, "hang")
	p.gotChallenge = make(chan struct{}, 1)
	a := external.New(serve(t, p), "fake")
	if _, err := a.AttestationData(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := a.Respond(ctx, []byte("nonce"))
		errc <- err
	}()
	<-p.gotChallenge
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("Respond = %v, want Canceled", err)
	}
	wantEnd(t, p, "canceled", "returned")
}

func TestRespondWithoutAttestation(t *testing.T) {
	a := external.New(serve(t, newPlugin(t, "")), "fake")
	_, err := a.Respond(context.Background(), []byte("nonce"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("err = %v, want FailedPrecondition", err)
	}
}
