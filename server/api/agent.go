package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
)

// AgentService implements agent/v1.
type AgentService struct {
	agentv1.UnimplementedAgentServer
	api *API
}

func nodeToProto(n *datastore.AttestedNode) *types.Agent {
	id, err := spiffeid.FromString(n.SPIFFEID)
	var pid *types.SPIFFEID
	if err == nil {
		pid = idToProto(id)
	}
	return &types.Agent{
		Id:                   pid,
		AttestationType:      n.AttestationType,
		X509SvidSerialNumber: n.CertSerial,
		X509SvidExpiresAt:    n.CertNotAfter,
		Selectors:            n.Selectors,
		Banned:               n.Banned(),
		CanReattest:          n.CanReattest,
	}
}

func applyAgentMask(a *types.Agent, m *types.AgentMask) *types.Agent {
	if m == nil {
		return a
	}
	out := &types.Agent{Id: a.Id}
	if m.AttestationType {
		out.AttestationType = a.AttestationType
	}
	if m.X509SvidSerialNumber {
		out.X509SvidSerialNumber = a.X509SvidSerialNumber
	}
	if m.X509SvidExpiresAt {
		out.X509SvidExpiresAt = a.X509SvidExpiresAt
	}
	if m.Selectors {
		out.Selectors = a.Selectors
	}
	if m.Banned {
		out.Banned = a.Banned
	}
	if m.CanReattest {
		out.CanReattest = a.CanReattest
	}
	return out
}

type agentFilter struct {
	attestationType string
	selectorMatch   *types.SelectorMatch
	banned          *bool
	canReattest     *bool
	expiresBefore   string
}

func (s *AgentService) nodesRequest(f agentFilter) (*datastore.ListAttestedNodesRequest, error) {
	req := &datastore.ListAttestedNodesRequest{ByAttestationType: f.attestationType, ByBanned: f.banned, ByCanReattest: f.canReattest}
	if f.selectorMatch != nil {
		for _, sel := range f.selectorMatch.Selectors {
			if err := validateSelector(sel); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "invalid selector filter: %v", err)
			}
		}
		req.BySelectors = &datastore.SelectorFilter{Selectors: f.selectorMatch.Selectors, Match: datastore.MatchBehavior(f.selectorMatch.Match)}
	}
	if f.expiresBefore != "" {
		t, err := time.Parse("2006-01-02 15:04:05 -0700 -07", f.expiresBefore)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid by_expires_before %q: use the format \"2006-01-02 15:04:05 -0700 -07\"", f.expiresBefore)
		}
		req.ExpiresBefore = t.Unix()
	}
	return req, nil
}

// agentFilterGetters is what ListAgentsRequest_Filter and
// CountAgentsRequest_Filter have in common.
type agentFilterGetters interface {
	GetByAttestationType() string
	GetBySelectorMatch() *types.SelectorMatch
	GetByBanned() *wrapperspb.BoolValue
	GetByCanReattest() *wrapperspb.BoolValue
	GetByExpiresBefore() string
}

func filterOf(r agentFilterGetters) agentFilter {
	f := agentFilter{attestationType: r.GetByAttestationType(), selectorMatch: r.GetBySelectorMatch(), expiresBefore: r.GetByExpiresBefore()}
	if b := r.GetByBanned(); b != nil {
		f.banned = &b.Value
	}
	if b := r.GetByCanReattest(); b != nil {
		f.canReattest = &b.Value
	}
	return f
}

// CountAgents implements agent/v1.
func (s *AgentService) CountAgents(ctx context.Context, req *agentv1.CountAgentsRequest) (*agentv1.CountAgentsResponse, error) {
	nr, err := s.nodesRequest(filterOf(req.GetFilter()))
	if err != nil {
		return nil, err
	}
	n, err := s.api.cfg.DataStore.CountAttestedNodes(ctx, nr)
	if err != nil {
		return nil, dsError("count agents", err)
	}
	return &agentv1.CountAgentsResponse{Count: n}, nil
}

// ListAgents implements agent/v1.
func (s *AgentService) ListAgents(ctx context.Context, req *agentv1.ListAgentsRequest) (*agentv1.ListAgentsResponse, error) {
	nr, err := s.nodesRequest(filterOf(req.GetFilter()))
	if err != nil {
		return nil, err
	}
	if req.PageSize < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	if req.PageSize > 0 || req.PageToken != "" {
		nr.Pagination = &datastore.Pagination{Size: req.PageSize, Token: req.PageToken}
	}
	nodes, next, err := s.api.cfg.DataStore.ListAttestedNodes(ctx, nr)
	if err != nil {
		return nil, dsError("list agents", err)
	}
	resp := &agentv1.ListAgentsResponse{NextPageToken: next}
	for _, n := range nodes {
		resp.Agents = append(resp.Agents, applyAgentMask(nodeToProto(n), req.OutputMask))
	}
	return resp, nil
}

func (s *AgentService) agentID(p *types.SPIFFEID) (spiffeid.ID, error) {
	id, err := s.api.idFromProto("invalid agent ID", p)
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if !isAgentPath(s.api.cfg.TrustDomain, id) {
		return spiffeid.ID{}, status.Errorf(codes.InvalidArgument, "invalid agent ID: %q is not an agent ID (path must start with /spire/agent/)", id)
	}
	return id, nil
}

// GetAgent implements agent/v1.
func (s *AgentService) GetAgent(ctx context.Context, req *agentv1.GetAgentRequest) (*types.Agent, error) {
	id, err := s.agentID(req.Id)
	if err != nil {
		return nil, err
	}
	n, err := s.api.cfg.DataStore.FetchAttestedNode(ctx, id.String())
	if err != nil {
		return nil, dsError("agent "+id.String(), err)
	}
	return applyAgentMask(nodeToProto(n), req.OutputMask), nil
}

// DeleteAgent implements agent/v1 (evict): the agent must attest again.
func (s *AgentService) DeleteAgent(ctx context.Context, req *agentv1.DeleteAgentRequest) (*emptypb.Empty, error) {
	id, err := s.agentID(req.Id)
	if err != nil {
		return nil, err
	}
	_, err = s.api.cfg.DataStore.DeleteAttestedNode(ctx, id.String())
	s.api.nodes.forget(id.String())
	s.api.notices.evict(id.String(), agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %q was deleted", id))
	if err != nil {
		return nil, dsError("agent "+id.String(), err)
	}
	s.api.cfg.Log.Info("Agent evicted", "agent_id", id.String(), "caller_id", callerName(ctx), "caller_addr", peerAddr(ctx))
	return &emptypb.Empty{}, nil
}

// BanAgent implements agent/v1: the node stays, with no active SVID, so it
// can neither sync nor attest again until deleted.
func (s *AgentService) BanAgent(ctx context.Context, req *agentv1.BanAgentRequest) (*emptypb.Empty, error) {
	id, err := s.agentID(req.Id)
	if err != nil {
		return nil, err
	}
	// A ban must win over whatever it races with (a renewal or an
	// activation through another server), so on a conflict it reads the
	// node again and bans that, once. It is conditional all the same:
	// it writes the node's other columns back as it read them, which a
	// blind write would do over a newer row.
	for attempt := 0; ; attempt++ {
		var n *datastore.AttestedNode
		if n, err = s.api.cfg.DataStore.FetchAttestedNode(ctx, id.String()); err != nil && attempt == 0 {
			return nil, dsError("agent "+id.String(), err)
		} else if err != nil {
			break // deleted meanwhile: reported below, after forgetting it
		}
		read := n.Serials()
		n.CertSerial, n.NewCertSerial, n.Selectors = "", "", nil
		err = s.api.cfg.DataStore.UpdateAttestedNode(ctx, n, read)
		if !errors.Is(err, datastore.ErrConflict) || attempt == 1 {
			break
		}
	}
	s.api.nodes.forget(id.String())
	s.api.notices.evict(id.String(), agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %q is banned", id))
	if err != nil {
		return nil, s.api.nodeWriteError(ctx, "ban agent", id.String(), err)
	}
	s.api.cfg.Log.Info("Agent banned", "agent_id", id.String(), "caller_id", callerName(ctx), "caller_addr", peerAddr(ctx))
	return &emptypb.Empty{}, nil
}

// CreateJoinToken implements agent/v1. With agent_id it also creates the
// node-alias entry that maps the token's agent ID to agent_id, as SPIRE does.
func (s *AgentService) CreateJoinToken(ctx context.Context, req *agentv1.CreateJoinTokenRequest) (*types.JoinToken, error) {
	if req.Ttl < 1 {
		return nil, status.Error(codes.InvalidArgument, "ttl is required, you must provide one")
	}
	token := req.Token
	if token == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, status.Errorf(codes.Internal, "generate token: %v", err)
		}
		h := hex.EncodeToString(b[:])
		token = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	}
	parentID, err := jointoken.AgentID(s.api.cfg.TrustDomain, token)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid token %q: %v", token, err)
	}
	var aliasID spiffeid.ID
	if req.AgentId != nil {
		if aliasID, err = s.api.workloadIDFromProto("invalid agent ID", req.AgentId); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	expiry := s.api.now().Add(time.Duration(req.Ttl) * time.Second)
	if err := s.api.cfg.DataStore.CreateJoinToken(ctx, &datastore.JoinToken{Token: token, ExpiresAt: expiry}); err != nil {
		return nil, dsError("join token", err)
	}
	if req.AgentId != nil {
		_, err := s.api.cfg.DataStore.CreateEntry(ctx, &types.Entry{
			SpiffeId:  idToProto(aliasID),
			ParentId:  idToProto(parentID),
			Selectors: []*types.Selector{{Type: "spiffe_id", Value: parentID.String()}},
		})
		s.api.entries.invalidate()
		if err != nil {
			return nil, dsError("node-alias entry", err)
		}
	}
	return &types.JoinToken{Value: token, ExpiresAt: expiry.Unix()}, nil
}

// recvWithin receives the next AttestAgent message, or fails with
// DeadlineExceeded after d. The handler returns on that error, which ends
// the stream and with it the Recv left waiting in its goroutine; nothing
// calls Recv on the stream again. That goroutine may still receive a
// message after the handler has returned, so it touches nothing but its
// own channel: whatever the interceptor reads of the call, the handler's
// goroutine wrote (noteAttestFirst).
func recvWithin(stream agentv1.Agent_AttestAgentServer, d time.Duration, what string) (*agentv1.AttestAgentRequest, error) {
	type received struct {
		req *agentv1.AttestAgentRequest
		err error
	}
	ch := make(chan received, 1)
	go func() {
		req, err := stream.Recv()
		ch <- received{req, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.req, r.err
	case <-t.C:
		return nil, &silentPeerError{status.Newf(codes.DeadlineExceeded, "no %s within %s", what, d)}
	}
}

// silentPeerError is the server's refusal of an AttestAgent stream whose
// peer sent nothing in time. Its code is DeadlineExceeded, as when the
// caller's own deadline runs out; it is a type of its own so that the
// security log can tell the server refusing a caller (logged) from a
// caller giving up (not logged), even after an attestor wrapped it.
type silentPeerError struct{ st *status.Status }

func (e *silentPeerError) Error() string { return e.st.Err().Error() }

// GRPCStatus gives gRPC, and status.FromError, the refusal's status.
func (e *silentPeerError) GRPCStatus() *status.Status { return e.st }

// AttestAgent implements agent/v1: the agent sends its attestation data and
// a CSR, answers any challenges, and receives its agent SVID.
func (s *AgentService) AttestAgent(stream agentv1.Agent_AttestAgentServer) error {
	ctx := stream.Context()
	recv := func(what string) (*agentv1.AttestAgentRequest, error) {
		return recvWithin(stream, s.api.cfg.AttestMessageTimeout, what)
	}
	req, err := recv("attestation parameters")
	if err != nil {
		return err
	}
	noteAttestFirst(ctx, req)
	params := req.GetParams()
	switch {
	case params == nil:
		return status.Error(codes.InvalidArgument, "malformed param: missing params")
	case params.Data == nil || params.Data.Type == "":
		return status.Error(codes.InvalidArgument, "malformed param: missing attestation data type")
	case params.Params == nil:
		return status.Error(codes.InvalidArgument, "malformed param: missing X509-SVID params")
	}
	csr, err := s.api.parseCallerCSR(ctx, "AttestAgent", params.Params.Csr)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed param: %v", err)
	}
	attestor, ok := s.api.cfg.Attestors[params.Data.Type]
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "error getting node attestor: could not find node attestor type %q", params.Data.Type)
	}
	rounds := 0
	challenge := func(ctx context.Context, c []byte) ([]byte, error) {
		if rounds++; rounds > MaxChallengeRounds {
			return nil, status.Error(codes.ResourceExhausted, "too many challenge rounds")
		}
		if err := stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Challenge{Challenge: c}}); err != nil {
			return nil, err
		}
		resp, err := recv("challenge response")
		if err != nil {
			return nil, err
		}
		r := resp.GetChallengeResponse()
		if r == nil {
			return nil, status.Error(codes.InvalidArgument, "expected a challenge response")
		}
		return r, nil
	}
	res, err := attestor.Attest(ctx, params.Data.Payload, csr, challenge)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Errorf(codes.PermissionDenied, "failed to attest: %v", err)
	}
	noteAttestAgentID(ctx, res.AgentID.String())
	if !res.AgentID.MemberOf(s.api.cfg.TrustDomain) {
		return status.Errorf(codes.Internal, "attestor returned agent ID %q outside the trust domain", res.AgentID)
	}
	existing, err := s.fetchAttestable(ctx, res.AgentID.String())
	if err != nil {
		return err
	}
	svid, err := s.api.cfg.CA.IssueX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: res.AgentID, PublicKey: csr.PublicKey, TTL: s.api.cfg.AgentTTL, Kind: ca.KindAgent})
	if err != nil {
		return signError("failed to sign agent SVID", err)
	}
	node := &datastore.AttestedNode{
		SPIFFEID:        res.AgentID.String(),
		AttestationType: params.Data.Type,
		CertSerial:      svid.Serial.String(),
		CertNotAfter:    svid.NotAfter.Unix(),
		CanReattest:     res.CanReattest,
		Selectors:       res.Selectors,
		SpendJoinToken:  res.JoinToken,
	}
	if node.Selectors == nil {
		node.Selectors = []*types.Selector{}
	}
	reattest := existing != nil
	// The write is conditional on the node as read: a ban made
	// meanwhile (through another server) must not be undone. Losing the
	// race is retried once from a fresh read, which is correct here, not
	// a lost update: the agent has just proved its identity afresh and
	// its SVID is not sent yet, so replacing what the winner wrote is
	// what the two calls one after the other would have done, and the
	// fresh read refuses a node banned in between.
	for attempt := 0; ; attempt++ {
		if existing == nil {
			err = s.api.cfg.DataStore.CreateAttestedNode(ctx, node)
		} else {
			err = s.api.cfg.DataStore.UpdateAttestedNode(ctx, node, existing.Serials())
		}
		lost := errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrAlreadyExists) ||
			(existing != nil && errors.Is(err, datastore.ErrNotFound))
		if !lost || attempt == 1 {
			break
		}
		if existing, err = s.fetchAttestable(ctx, node.SPIFFEID); err != nil {
			s.api.nodes.forget(node.SPIFFEID)
			return err
		}
	}
	s.api.nodes.forget(node.SPIFFEID)
	if errors.Is(err, datastore.ErrAlreadyExists) {
		err = fmt.Errorf("%w (created concurrently)", datastore.ErrConflict)
	}
	if errors.Is(err, datastore.ErrJoinTokenSpent) {
		// A concurrent attestation with the same token recorded its
		// node first: the same refusal as a token already used.
		return jointoken.SpentError()
	}
	if err != nil {
		// The write failed, so a join token in the ID is still unspent.
		return s.api.nodeWriteError(ctx, "store attested node", redact(node.SPIFFEID, []byte(res.JoinToken)), err)
	}
	s.api.cfg.Log.Info("Agent attested", "agent_id", res.AgentID.String(), "attestation_type", params.Data.Type, "reattest", reattest)
	return stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Result_{Result: &agentv1.AttestAgentResponse_Result{
		Svid:         x509SVIDToProto(res.AgentID, svid),
		Reattestable: res.CanReattest,
	}}})
}

// RenewAgent implements agent/v1. The new serial is recorded as pending; it
// becomes current the first time the agent uses it, so an agent that never
// received the response can keep using its old SVID.
func (s *AgentService) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest) (*agentv1.RenewAgentResponse, error) {
	c, err := callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	if req.Params == nil {
		return nil, status.Error(codes.InvalidArgument, "missing params")
	}
	// The node authenticated for this call may be a cached copy: write
	// back the database's, checked again, so that a ban made meanwhile
	// (by another server) is never undone.
	node, err := s.api.nodes.fetch(ctx, c.ID.String(), true)
	if err != nil {
		return nil, dsError("fetch attested node", err)
	}
	// Upstream agents act on the reason attached, not on the message: a
	// banned one shuts down, one with a stale SVID re-attests.
	if node.Banned() {
		return nil, agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %q is banned", c.ID)
	}
	if node.CertSerial != c.Cert.SerialNumber.String() {
		return nil, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %q is no longer attested with this SVID", c.ID)
	}
	// A node that proved its key TPM-resident must prove each new key the
	// same way, which only attestation does: a renewal would certify a key
	// that may live anywhere (a copied data_dir's memory key) under an
	// identity whose selector says it never leaves the TPM. This holds
	// whatever CanReattest says, and the node is the one just read.
	if residentAgentKey(node) {
		return nil, agentDenied(types.PermissionDeniedDetails_AGENT_MUST_REATTEST,
			"agent %q proved its key resident in its TPM (selector tpm:%s): it must re-attest to prove its new key, not renew", c.ID, tpm.AgentKeyResident)
	}
	// A node that can re-attest must, as in SPIRE: renewing would keep the
	// identity alive on the SVID key alone, without fresh evidence from
	// the hardware, and freeze selectors that name the machine's state.
	if node.CanReattest {
		return nil, agentDenied(types.PermissionDeniedDetails_AGENT_MUST_REATTEST, "agent must reattest instead of renew")
	}
	csr, err := s.api.parseCallerCSR(ctx, "RenewAgent", req.Params.Csr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to parse CSR: %v", err)
	}
	svid, err := s.api.cfg.CA.IssueX509SVID(ctx, ca.X509SVIDParams{SPIFFEID: c.ID, PublicKey: csr.PublicKey, TTL: s.api.cfg.AgentTTL, Kind: ca.KindAgent})
	if err != nil {
		return nil, signError("failed to sign agent SVID", err)
	}
	// Conditional on the node just read, and not retried on a conflict:
	// what overtook this call may be another renewal whose SVID is
	// already on its way to this agent, and writing our serial over its
	// pending one would leave the agent holding an SVID the database no
	// longer knows. Aborted lets the agent renew again with the SVID it
	// authenticates with, which is still valid; a concurrent activation
	// or ban is then seen by that retry.
	read := node.Serials()
	node.NewCertSerial, node.NewCertNotAfter = svid.Serial.String(), svid.NotAfter.Unix()
	node.Selectors = nil
	err = s.api.cfg.DataStore.UpdateAttestedNode(ctx, node, read)
	s.api.nodes.forget(node.SPIFFEID)
	if err != nil {
		return nil, s.api.nodeWriteError(ctx, "renew agent", node.SPIFFEID, err)
	}
	return &agentv1.RenewAgentResponse{Svid: x509SVIDToProto(c.ID, svid)}, nil
}

// fetchAttestable reads the node an attestation is about to write: nil
// when there is none yet, PermissionDenied when it is banned.
func (s *AgentService) fetchAttestable(ctx context.Context, id string) (*datastore.AttestedNode, error) {
	n, err := s.api.cfg.DataStore.FetchAttestedNode(ctx, id)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, dsError("fetch attested node", err)
	case n.Banned():
		return nil, status.Error(codes.PermissionDenied, "failed to attest: agent is banned")
	}
	return n, nil
}

// nodeWriteError maps the failure of a node write. A write that lost its
// race with another write of the same node (datastore.ErrConflict: another
// server, or another call of this one, changed the node since it was read)
// is Aborted, which tells the caller to retry; it is logged as a refusal,
// rate-limited per source since a caller can provoke it at will.
func (a *API) nodeWriteError(ctx context.Context, op, agentID string, err error) error {
	if !errors.Is(err, datastore.ErrConflict) {
		return dsError(op, err)
	}
	a.sec.refused("node_conflict", sourceKey(ctx), "Node write refused: the node changed since it was read",
		"operation", op, "agent_id", agentID, "caller_id", callerName(ctx), "caller_addr", peerAddr(ctx),
		"reason", "another server or call wrote the node first")
	return status.Errorf(codes.Aborted, "%s: agent %q was changed concurrently (by another server or call); retry", op, agentID)
}

// residentAgentKey reports whether n carries the selector the tpm attestor
// gives an agent that proved its SVID key resident in its TPM.
func residentAgentKey(n *datastore.AttestedNode) bool {
	for _, s := range n.Selectors {
		if s.GetType() == tpm.PluginName && s.GetValue() == tpm.AgentKeyResident {
			return true
		}
	}
	return false
}

func x509SVIDToProto(id spiffeid.ID, svid *ca.X509SVID) *types.X509SVID {
	return &types.X509SVID{Id: idToProto(id), ExpiresAt: svid.NotAfter.Unix(), CertChain: svid.Chain}
}
