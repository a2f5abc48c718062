package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// audit writes SPIRE's audit line ("API accessed", type=audit) for an
// authorized call when audit_log_enabled is set: the outcome (status,
// status_code, status_message), the caller (caller_addr for TCP callers,
// caller_id for SVID holders), request_id, service and method, and a few
// request fields under SPIRE's names. A successful entry, X.509-SVID or
// federated-bundle batch gives one line per item with that item's status,
// as in SPIRE. Callers on the admin socket get caller_uid, caller_gid and
// caller_path; AttestAgent's line gets agent_id once the attestor has
// named the agent.
func (a *API) audit(ctx context.Context, fullMethod string, err error, req, resp any) {
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
	args = append(args, localCallerFields(ctx)...)
	if f, ok := ctx.Value(attestFirstKey{}).(*attestFirst); ok && f.agentID != "" {
		id := f.agentID
		if err != nil {
			// A join token is part of its agent's ID, and an attestation
			// that failed after the attestor named the agent (signing,
			// the node write) left the token unspent: still a secret.
			id = redact(id, f.req.GetParams().GetData().GetPayload())
		}
		args = append(args, "agent_id", id)
	}
	if err == nil {
		if items := batchItems(req, resp); items != nil {
			for _, it := range items {
				line := append(append([]any(nil), args...), it.fields...)
				a.cfg.Log.Info("API accessed", append(line, statusFields(it.status)...)...)
			}
			return
		}
	}
	args = append(args, requestFields(req)...)
	args = append(args, a.serviceAuditFields(req)...)
	if err == nil {
		args = append(args, "status", "success")
	} else {
		st := status.Convert(err)
		msg := st.Message()
		switch r := req.(type) {
		case *agentv1.CreateJoinTokenRequest:
			// An admin's chosen token may be quoted back in the error.
			msg = redact(msg, []byte(r.Token))
		case *agentv1.AttestAgentRequest:
			// An attestor's error may quote its input, as in the
			// security log (attestRefused).
			msg = redact(msg, r.GetParams().GetData().GetPayload())
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
	}
	return localAuthorityAuditFields(req)
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

// auditItem is one item of a batch call: its fields and its status.
type auditItem struct {
	fields []any
	status *types.Status
}

// batchItems splits a successful batch call into its items, with SPIRE's
// per-item fields; nil for other calls.
func batchItems(req, resp any) []auditItem {
	var items []auditItem
	switch r := resp.(type) {
	case *svidv1.BatchNewX509SVIDResponse:
		q, _ := req.(*svidv1.BatchNewX509SVIDRequest)
		for i, res := range r.Results {
			p := item(q.GetParams(), i)
			f := []any{"csr", hashBytes(p.GetCsr()), "entry_id", p.GetEntryId()}
			if res.Svid != nil {
				f = append(f, "spiffe_id", protoIDString(res.Svid.Id), "expires_at", res.Svid.ExpiresAt)
			}
			items = append(items, auditItem{f, res.Status})
		}
	case *entryv1.BatchCreateEntryResponse:
		q, _ := req.(*entryv1.BatchCreateEntryRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{entryFields(item(q.GetEntries(), i)), res.Status})
		}
	case *entryv1.BatchUpdateEntryResponse:
		q, _ := req.(*entryv1.BatchUpdateEntryRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{entryFields(item(q.GetEntries(), i)), res.Status})
		}
	case *entryv1.BatchDeleteEntryResponse:
		q, _ := req.(*entryv1.BatchDeleteEntryRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{[]any{"entry_id", item(q.GetIds(), i)}, res.Status})
		}
	case *bundlev1.BatchCreateFederatedBundleResponse:
		q, _ := req.(*bundlev1.BatchCreateFederatedBundleRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{bundleFields(item(q.GetBundle(), i), nil), res.Status})
		}
	case *bundlev1.BatchUpdateFederatedBundleResponse:
		q, _ := req.(*bundlev1.BatchUpdateFederatedBundleRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{bundleFields(item(q.GetBundle(), i), q.GetInputMask()), res.Status})
		}
	case *bundlev1.BatchSetFederatedBundleResponse:
		q, _ := req.(*bundlev1.BatchSetFederatedBundleRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{bundleFields(item(q.GetBundle(), i), nil), res.Status})
		}
	case *bundlev1.BatchDeleteFederatedBundleResponse:
		q, _ := req.(*bundlev1.BatchDeleteFederatedBundleRequest)
		for i, res := range r.Results {
			items = append(items, auditItem{[]any{"trust_domain_id", item(q.GetTrustDomains(), i), "mode", q.GetMode().String()}, res.Status})
		}
	default:
		return trustDomainBatchItems(req, resp)
	}
	if items == nil {
		items = []auditItem{} // an empty batch: no line, as in SPIRE
	}
	return items
}

// item returns s[i], or the zero value when the results outnumber the
// request's items (they never should).
func item[T any](s []T, i int) T {
	var zero T
	if i < len(s) {
		return s[i]
	}
	return zero
}

// entryFields are SPIRE's audit fields of an entry in a request.
func entryFields(e *types.Entry) []any {
	if e == nil {
		return nil
	}
	var f []any
	if e.Id != "" {
		f = append(f, "entry_id", e.Id)
	}
	if e.SpiffeId != nil {
		f = append(f, "spiffe_id", protoIDString(e.SpiffeId))
	}
	if e.ParentId != nil {
		f = append(f, "parent_id", protoIDString(e.ParentId))
	}
	if len(e.Selectors) > 0 {
		sels := make([]string, 0, len(e.Selectors))
		for _, s := range e.Selectors {
			sels = append(sels, s.Type+":"+s.Value)
		}
		f = append(f, "selectors", strings.Join(sels, ","))
	}
	return append(f, "x509_svid_ttl", e.X509SvidTtl, "jwt_svid_ttl", e.JwtSvidTtl, "admin", e.Admin, "downstream", e.Downstream)
}

// statusFields renders a per-item status as SPIRE's audit fields.
func statusFields(st *types.Status) []any {
	if st == nil || codes.Code(st.Code) == codes.OK {
		return []any{"status", "success"}
	}
	return []any{"status", "error", "status_code", codes.Code(st.Code).String(), "status_message", st.Message}
}

// localCallerFields are SPIRE's caller_uid, caller_gid and caller_path for
// a caller on the admin socket. The path is the binary the caller's pid
// runs now (as SPIRE reads it), left out when it cannot be read: the
// process has exited, or /proc hides it.
func localCallerFields(ctx context.Context) []any {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	li, ok := p.AuthInfo.(LocalAuthInfo)
	if !ok || li.PID == 0 {
		return nil
	}
	fields := []any{"caller_uid", li.UID, "caller_gid", li.GID}
	if path, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", li.PID)); err == nil {
		fields = append(fields, "caller_path", path)
	}
	return fields
}
