package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc/status"
)

// audit writes SPIRE's audit line ("API accessed", type=audit) for an
// authorized call when audit_log_enabled is set: the outcome (status,
// status_code, status_message), the caller (caller_addr for TCP callers,
// caller_id for SVID holders), request_id, service and method, and a few
// request fields under SPIRE's names. Unlike SPIRE it writes one line per
// call, also for batch calls (SPIRE writes one per item), and it has no
// caller_uid, caller_gid or caller_path for local callers.
func (a *API) audit(ctx context.Context, fullMethod string, err error, req any) {
	if !a.cfg.AuditLog {
		return
	}
	if err == nil && (strings.HasPrefix(fullMethod, "/grpc.health.v1.") || strings.HasPrefix(fullMethod, "/spire.api.server.debug.v1.")) {
		// SPIRE's health and debug handlers audit nothing; only their
		// failures reach its audit middleware.
		return
	}
	service, method := splitMethod(fullMethod)
	args := []any{"type", "audit", "request_id", requestID(ctx), "service", service, "method", method}
	if addr, ok := callerAddrIfRemote(ctx); ok {
		args = append(args, "caller_addr", addr)
	}
	if c, ok := CallerFromContext(ctx); ok && !c.ID.IsZero() {
		args = append(args, "caller_id", c.ID.String())
	}
	args = append(args, requestFields(req)...)
	if err == nil {
		args = append(args, "status", "success")
	} else {
		st := status.Convert(err)
		msg := st.Message()
		if r, ok := req.(*agentv1.CreateJoinTokenRequest); ok {
			// An admin's chosen token may be quoted back in the error.
			msg = redact(msg, []byte(r.Token))
		}
		args = append(args, "status", "error", "status_code", st.Code().String(), "status_message", msg)
	}
	a.cfg.Log.Info("API accessed", args...)
}

// requestFields are the audit fields SPIRE records for a request, for the
// requests whose fields carry no secret (never a join token's value, a
// CSR or a key: a CSR is recorded by its SHA-256, as SPIRE does).
func requestFields(req any) []any {
	switch r := req.(type) {
	case *agentv1.AttestAgentRequest:
		if d := r.GetParams().GetData(); d != nil {
			return []any{"node_attestor_type", d.Type}
		}
	case *agentv1.RenewAgentRequest:
		if csr := r.GetParams().GetCsr(); len(csr) > 0 {
			return []any{"csr", hashBytes(csr)}
		}
	case *agentv1.GetAgentRequest:
		return []any{"spiffe_id", protoIDString(r.Id)}
	case *agentv1.DeleteAgentRequest:
		return []any{"spiffe_id", protoIDString(r.Id)}
	case *agentv1.BanAgentRequest:
		return []any{"spiffe_id", protoIDString(r.Id)}
	case *agentv1.CreateJoinTokenRequest:
		f := []any{"ttl", r.Ttl}
		if r.AgentId != nil {
			f = append(f, "spiffe_id", protoIDString(r.AgentId))
		}
		return f
	case *svidv1.MintX509SVIDRequest:
		return []any{"csr", hashBytes(r.Csr), "ttl", r.Ttl}
	case *svidv1.MintJWTSVIDRequest:
		return []any{"spiffe_id", protoIDString(r.Id), "audience", strings.Join(r.Audience, ","), "ttl", r.Ttl}
	case *svidv1.NewJWTSVIDRequest:
		return []any{"entry_id", r.EntryId, "audience", strings.Join(r.Audience, ",")}
	case *svidv1.BatchNewX509SVIDRequest:
		ids := make([]string, 0, len(r.Params))
		for _, p := range r.Params {
			ids = append(ids, p.GetEntryId())
		}
		return []any{"entry_id", strings.Join(ids, ",")}
	}
	return nil
}

// hashBytes is SPIRE's api.HashByte: hex SHA-256, so a CSR can be matched
// without the log holding it.
func hashBytes(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
