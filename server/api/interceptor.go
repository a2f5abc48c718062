package api

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/spiffe-hw/spire-hw/internal/uuid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The interceptors run every call through the same steps as SPIRE's
// middleware chain: authorization, then the method's rate limit, then the
// handler; refusals go to the security log and, with audit_log_enabled,
// every authorized call to the audit log.

// UnaryInterceptor authenticates, authorizes and rate-limits every unary
// call.
func (a *API) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	actx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		a.callRefused(ctx, info.FullMethod, err)
		return nil, err
	}
	actx = a.withRequestID(actx)
	if err = a.rateLimit(actx, info.FullMethod, req); err == nil {
		var resp any
		resp, err = handler(actx, req)
		if err == nil {
			a.audit(actx, info.FullMethod, nil, req, resp)
			return resp, nil
		}
		a.handlerRefused(actx, info.FullMethod, err)
	}
	a.audit(actx, info.FullMethod, err, req, nil)
	return nil, err
}

// StreamInterceptor authenticates, authorizes and rate-limits every
// streaming call.
func (a *API) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		a.callRefused(ss.Context(), info.FullMethod, err)
		return err
	}
	ctx = a.withRequestID(ctx)
	var first *attestFirst
	if info.FullMethod == methodAttestAgent {
		first = &attestFirst{}
		ctx = context.WithValue(ctx, attestFirstKey{}, first)
	}
	ws := &wrappedStream{ServerStream: ss, ctx: ctx}
	if err = a.rateLimit(ctx, info.FullMethod, nil); err == nil {
		if err = handler(srv, ws); err != nil {
			if first != nil {
				a.attestRefused(ctx, first.req, err)
			} else {
				a.handlerRefused(ctx, info.FullMethod, err)
			}
		}
	}
	var req any
	if first != nil && first.req != nil {
		req = first.req
	}
	a.audit(ctx, info.FullMethod, err, req, nil)
	return err
}

// wrappedStream carries the authorized context.
type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// attestFirst is where AttestAgent's handler leaves its first request, so
// that a refusal or an audit line can name the attestor type and redact
// the payload. Only the handler's own goroutine writes it, before it
// returns, so the interceptor reads it without a lock: a Recv that
// recvWithin gave up on may still complete after the handler returned,
// and must not write anything the interceptor reads.
type attestFirst struct {
	req *agentv1.AttestAgentRequest
	// agentID is the agent the attestor named, for the audit line (as
	// SPIRE adds agent_id once it is known, success or not).
	agentID string
}

type attestFirstKey struct{}

// noteAttestFirst records req as the call's first request, if it carries
// attestation parameters and the call came through StreamInterceptor.
func noteAttestFirst(ctx context.Context, req *agentv1.AttestAgentRequest) {
	if f, ok := ctx.Value(attestFirstKey{}).(*attestFirst); ok && f.req == nil && req.GetParams() != nil {
		f.req = req
	}
}

// noteAttestAgentID records the agent the attestor named, for the audit
// line of the call that came through StreamInterceptor.
func noteAttestAgentID(ctx context.Context, id string) {
	if f, ok := ctx.Value(attestFirstKey{}).(*attestFirst); ok {
		f.agentID = id
	}
}

// splitMethod splits a full method into SPIRE's service and method log
// fields ("agent.v1.Agent", "AttestAgent").
func splitMethod(fullMethod string) (service, method string) {
	service, method, _ = strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if service == "grpc.health.v1.Health" {
		return "Health", method
	}
	return strings.TrimPrefix(service, "spire.api.server."), method
}

// callRefused logs a call that authentication or authorization refused.
func (a *API) callRefused(ctx context.Context, fullMethod string, err error) {
	st := status.Convert(err)
	service, method := splitMethod(fullMethod)
	a.sec.refused("call", sourceKey(ctx)+" "+fullMethod, "API call refused",
		"service", service, "method", method, "caller_id", callerName(ctx), "caller_addr", peerAddr(ctx),
		"code", st.Code().String(), "reason", st.Message())
}

// handlerRefused logs a call that its handler refused for who the caller
// is (an agent asking for an entry it is not authorized for, a banned
// agent renewing); other errors are the caller's input or the server's
// state, which the handlers and the audit log report.
func (a *API) handlerRefused(ctx context.Context, fullMethod string, err error) {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		a.callRefused(ctx, fullMethod, err)
	}
}

// attestRefused logs a failed node attestation: the attestor type, the
// reason and where from; never the attestation payload, which for join
// tokens is the secret. A stream that sent nothing within the message
// timeout is a refusal too (silentPeerError), logged as the others.
func (a *API) attestRefused(ctx context.Context, req *agentv1.AttestAgentRequest, err error) {
	st := status.Convert(err)
	var silent *silentPeerError
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded:
		if !errors.As(err, &silent) {
			// The agent went away, or its own deadline ran out;
			// nothing was refused.
			return
		}
	}
	d := req.GetParams().GetData()
	a.sec.refused("attest", sourceKey(ctx), "Agent attestation refused",
		"node_attestor_type", d.GetType(), "caller_addr", peerAddr(ctx), "code", st.Code().String(),
		"reason", redact(st.Message(), d.GetPayload()))
}

type requestIDKey struct{}

// withRequestID tags a call with a random ID, which the lines it causes
// share (SPIRE's request_id). Only the audit log reads it, so without
// audit_log_enabled no call pays for the random read.
func (a *API) withRequestID(ctx context.Context) context.Context {
	if !a.cfg.AuditLog {
		return ctx
	}
	id, err := uuid.NewV4()
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// callerAddrIfRemote returns the caller's address for TCP callers; SPIRE
// leaves caller_addr out for local ones.
func callerAddrIfRemote(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	if _, ok := p.Addr.(*net.TCPAddr); !ok {
		return "", false
	}
	return p.Addr.String(), true
}
