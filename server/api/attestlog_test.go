package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// logLines returns the lines of log with msg and every one of fields.
func logLines(log *syncbuf.Buffer, msg string, fields ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(log.String(), "\n") {
		if !strings.Contains(l, `msg="`+msg+`"`) {
			continue
		}
		for _, f := range fields {
			if !strings.Contains(l, f) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// newLoggedAPI returns an API over td whose log is in the returned buffer.
func newLoggedAPI(cfg Config) (*API, *syncbuf.Buffer) {
	buf := &syncbuf.Buffer{}
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")
	cfg.Log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(cfg), buf
}

// TestSilentAttestationLogged: an AttestAgent stream that sends nothing
// within the message timeout is refused by the server, and that refusal
// goes to the security log like any other (one line per source and
// interval), while a caller whose own deadline runs out, or that cancels,
// was refused nothing and is not logged.
func TestSilentAttestationLogged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("server's timeout", func(t *testing.T) {
		a, log := newLoggedAPI(Config{AttestMessageTimeout: 20 * time.Millisecond})
		client := agentv1.NewAgentClient(serveAPI(t, a))
		for i := range 3 {
			stream, err := client.AttestAgent(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "no attestation parameters within 20ms") {
				t.Fatalf("silent stream %d: %v, want the server's DeadlineExceeded", i, err)
			}
		}
		// The refusal is logged before the status is sent.
		lines := logLines(log, "Agent attestation refused", "level=WARN", "caller_addr=127.0.0.1:", "code=DeadlineExceeded", `reason="no attestation parameters within 20ms"`)
		if len(lines) != 1 {
			t.Errorf("%d refusal lines for 3 silent streams from one source within the interval, want 1:\n%s", len(lines), log.String())
		}
	})

	t.Run("caller gives up", func(t *testing.T) {
		a, log := newLoggedAPI(Config{AttestMessageTimeout: time.Minute})
		client := agentv1.NewAgentClient(serveAPI(t, a))
		for _, tc := range []struct {
			name string
			end  func(context.Context) (context.Context, context.CancelFunc)
			want codes.Code
		}{
			{"own deadline", func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 50*time.Millisecond)
			}, codes.DeadlineExceeded},
			{"cancel", context.WithCancel, codes.Canceled},
		} {
			sctx, end := tc.end(ctx)
			stream, err := client.AttestAgent(sctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == codes.Canceled {
				// Let the stream reach its handler before cancelling.
				waitGoroutines(t, "no AttestAgent handler started", func() bool { return goroutinesIn("api.recvWithin") > 0 })
				end()
			}
			_, err = stream.Recv()
			end()
			if status.Code(err) != tc.want {
				t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
			}
			// The server learns of the end asynchronously; once its
			// handler is gone, whatever it logged is in the buffer.
			waitGoroutines(t, "AttestAgent handler still running", func() bool { return goroutinesIn("api.(*AgentService).AttestAgent") == 0 })
		}
		if l := logLines(log, "Agent attestation refused"); len(l) != 0 {
			t.Errorf("callers that gave up were logged as refused:\n%s", strings.Join(l, "\n"))
		}
	})
}

// quotingAttestor refuses every node with an error that quotes its
// payload, as a careless attestor might.
type quotingAttestor struct{}

func (quotingAttestor) Type() string { return "quoting" }

func (quotingAttestor) Attest(_ context.Context, payload []byte, _ *x509.CertificateRequest, _ nodeattestor.ChallengeFunc) (*nodeattestor.Result, error) {
	return nil, fmt.Errorf("quoting: no node has the secret %s", payload)
}

// TestAttestAuditRedactsPayload: an attestor's error that quotes the
// attestation payload reaches neither the audit line nor the security log
// line of the refusal; both say it was redacted.
func TestAttestAuditRedactsPayload(t *testing.T) {
	a, log := newLoggedAPI(Config{AuditLog: true, Attestors: map[string]nodeattestor.Attestor{"quoting": quotingAttestor{}}})
	client := agentv1.NewAgentClient(serveAPI(t, a))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const payload = "payload-secret-8f2c41"
	stream, err := client.AttestAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(attestRequest("quoting", []byte(payload), testCSR(t))); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), payload) {
		// The caller's own payload may be quoted back to it; the test
		// needs an error that quotes it.
		t.Fatalf("AttestAgent = %v, want PermissionDenied quoting the payload", err)
	}
	// Both lines are written before the status is sent.
	audit := logLines(log, "API accessed", "type=audit", "method=AttestAgent", "node_attestor_type=quoting", "status=error", "status_code=PermissionDenied", "[redacted]")
	if len(audit) != 1 {
		t.Errorf("%d redacted audit lines for the refusal, want 1:\n%s", len(audit), log.String())
	}
	if l := logLines(log, "Agent attestation refused", "node_attestor_type=quoting", "[redacted]"); len(l) != 1 {
		t.Errorf("%d redacted security log lines for the refusal, want 1:\n%s", len(l), log.String())
	}
	if strings.Contains(log.String(), payload) {
		t.Errorf("the attestation payload is in the log:\n%s", log.String())
	}
}
