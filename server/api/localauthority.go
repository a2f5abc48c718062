package api

import (
	"context"
	"errors"
	"fmt"
	"strings"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/ca"
)

// LocalAuthority is what localauthority/v1 needs from the CA; *ca.Manager
// implements it. When Config.CA implements it too, the service uses it.
type LocalAuthority interface {
	X509Slots() (current, next ca.Slot)
	JWTSlots() (current, next ca.Slot)
	IsUpstreamAuthority() bool
	PrepareX509CA(ctx context.Context) (ca.Slot, error)
	ActivateX509CA(ctx context.Context, authorityID string) (ca.Slot, error)
	PrepareJWTKey(ctx context.Context) (ca.Slot, error)
	ActivateJWTKey(ctx context.Context, authorityID string) (ca.Slot, error)
	TaintX509Authority(ctx context.Context, subjectKeyID string) error
	RevokeX509Authority(ctx context.Context, subjectKeyID string) error
	TaintJWTKey(ctx context.Context, keyID string) error
	RevokeJWTKey(ctx context.Context, keyID string) error
	HasJWTKey(ctx context.Context, keyID string) (bool, error)
}

// LocalAuthorityService implements localauthority/v1 with SPIRE's rules
// and wording: only the prepared authority can be activated, only the old
// one (never the active one) tainted, and only a tainted one revoked. With
// an upstream authority the local X.509 calls give way to the upstream
// ones, which name the upstream certificate by subject key ID.
type LocalAuthorityService struct {
	localauthorityv1.UnsafeLocalAuthorityServer
	api *API
}

var _ localauthorityv1.LocalAuthorityServer = (*LocalAuthorityService)(nil)

func (s *LocalAuthorityService) authority() (LocalAuthority, error) {
	la, ok := s.api.cfg.CA.(LocalAuthority)
	if !ok || la == nil {
		return nil, status.Error(codes.Unimplemented, "local authority management is not available on this server")
	}
	return la, nil
}

// refuse logs a refusal or failure with its reason and returns it as SPIRE
// returns it: the message, followed by the cause's message when there is
// one.
func (s *LocalAuthorityService) refuse(ctx context.Context, code codes.Code, msg string, cause error, attrs ...any) error {
	text := msg
	if cause != nil {
		text = msg + ": " + causeMessage(cause)
	}
	attrs = append(attrs, "reason", text, "caller", peerAddr(ctx))
	if code == codes.Internal || code == codes.Unavailable {
		s.api.cfg.Log.Error("localauthority: call failed", attrs...)
	} else {
		s.api.cfg.Log.Warn("localauthority: request refused", attrs...)
	}
	return status.Error(code, text)
}

// causeMessage is the part of an error SPIRE's API quotes: a bundle
// refusal in SPIRE's datastore words, else the error text.
func causeMessage(err error) string {
	var aerr *ca.AuthorityError
	if errors.As(err, &aerr) {
		return aerr.Msg
	}
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// spireStatus is the journal status name SPIRE's messages quote.
func spireStatus(st ca.SlotStatus) string {
	switch st {
	case ca.SlotPrepared:
		return "PREPARED"
	case ca.SlotActive:
		return "ACTIVE"
	case ca.SlotOld:
		return "OLD"
	}
	return "UNKNOWN"
}

func authorityState(s ca.Slot) *localauthorityv1.AuthorityState {
	return &localauthorityv1.AuthorityState{
		AuthorityId:                   s.AuthorityID,
		ExpiresAt:                     s.NotAfter.Unix(),
		UpstreamAuthoritySubjectKeyId: s.UpstreamAuthorityID,
	}
}

// slotStates fills the active, prepared and old states from the slots.
func slotStates(current, next ca.Slot) (active, prepared, old *localauthorityv1.AuthorityState) {
	active = authorityState(current)
	if next.AuthorityID != "" {
		switch next.Status {
		case ca.SlotPrepared:
			prepared = authorityState(next)
		case ca.SlotOld:
			old = authorityState(next)
		}
	}
	return active, prepared, old
}

// GetJWTAuthorityState implements localauthority/v1.
func (s *LocalAuthorityService) GetJWTAuthorityState(ctx context.Context, _ *localauthorityv1.GetJWTAuthorityStateRequest) (*localauthorityv1.GetJWTAuthorityStateResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	current, next := la.JWTSlots()
	if current.Status != ca.SlotActive {
		return nil, s.refuse(ctx, codes.Unavailable, "server is initializing", nil)
	}
	resp := &localauthorityv1.GetJWTAuthorityStateResponse{}
	resp.Active, resp.Prepared, resp.Old = slotStates(current, next)
	return resp, nil
}

// PrepareJWTAuthority implements localauthority/v1.
func (s *LocalAuthorityService) PrepareJWTAuthority(ctx context.Context, _ *localauthorityv1.PrepareJWTAuthorityRequest) (*localauthorityv1.PrepareJWTAuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	if current, _ := la.JWTSlots(); current.Status != ca.SlotActive {
		return nil, s.refuse(ctx, codes.Unavailable, "server is initializing", nil)
	}
	slot, err := la.PrepareJWTKey(ctx)
	if err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to prepare JWT authority", err)
	}
	s.api.bundle.invalidate()
	return &localauthorityv1.PrepareJWTAuthorityResponse{PreparedAuthority: &localauthorityv1.AuthorityState{
		AuthorityId: slot.AuthorityID, ExpiresAt: slot.NotAfter.Unix(),
	}}, nil
}

// ActivateJWTAuthority implements localauthority/v1.
func (s *LocalAuthorityService) ActivateJWTAuthority(ctx context.Context, req *localauthorityv1.ActivateJWTAuthorityRequest) (*localauthorityv1.ActivateJWTAuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	id := req.GetAuthorityId()
	_, next := la.JWTSlots()
	if err := s.checkActivate(ctx, id, next); err != nil {
		return nil, err
	}
	slot, err := la.ActivateJWTKey(ctx, id)
	if err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to activate JWT authority", err, "local_authority_id", id)
	}
	return &localauthorityv1.ActivateJWTAuthorityResponse{ActivatedAuthority: &localauthorityv1.AuthorityState{
		AuthorityId: slot.AuthorityID, ExpiresAt: slot.NotAfter.Unix(),
	}}, nil
}

// checkActivate applies SPIRE's rules for activating the next slot.
func (s *LocalAuthorityService) checkActivate(ctx context.Context, id string, next ca.Slot) error {
	switch {
	case id == "":
		return s.refuse(ctx, codes.InvalidArgument, "no authority ID provided", nil)
	case id != next.AuthorityID:
		return s.refuse(ctx, codes.InvalidArgument, "unexpected authority ID", nil, "local_authority_id", id)
	case next.Status != ca.SlotPrepared:
		return s.refuse(ctx, codes.Internal, "only Prepared authorities can be activated",
			fmt.Errorf("unsupported local authority status: %s", spireStatus(next.Status)), "local_authority_id", id)
	}
	return nil
}

// checkTaint applies SPIRE's rules for tainting a local authority.
func (s *LocalAuthorityService) checkTaint(ctx context.Context, id string, current, next ca.Slot) error {
	switch {
	case id == "":
		return s.refuse(ctx, codes.InvalidArgument, "no authority ID provided", nil)
	case id == current.AuthorityID:
		return s.refuse(ctx, codes.InvalidArgument, "unable to taint current local authority", nil, "local_authority_id", id)
	case id != next.AuthorityID:
		return s.refuse(ctx, codes.InvalidArgument, "unexpected authority ID", nil, "local_authority_id", id)
	case next.Status != ca.SlotOld:
		return s.refuse(ctx, codes.InvalidArgument, "only Old local authorities can be tainted",
			fmt.Errorf("unsupported local authority status: %s", spireStatus(next.Status)), "local_authority_id", id)
	}
	return nil
}

// TaintJWTAuthority implements localauthority/v1.
func (s *LocalAuthorityService) TaintJWTAuthority(ctx context.Context, req *localauthorityv1.TaintJWTAuthorityRequest) (*localauthorityv1.TaintJWTAuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	id := req.GetAuthorityId()
	current, next := la.JWTSlots()
	if err := s.checkTaint(ctx, id, current, next); err != nil {
		return nil, err
	}
	if err := la.TaintJWTKey(ctx, id); err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to taint JWT authority", err, "local_authority_id", id)
	}
	s.api.bundle.invalidate()
	s.api.cfg.Log.Info("JWT authority tainted successfully", "local_authority_id", id)
	return &localauthorityv1.TaintJWTAuthorityResponse{TaintedAuthority: &localauthorityv1.AuthorityState{AuthorityId: id}}, nil
}

// RevokeJWTAuthority implements localauthority/v1. As in SPIRE, any JWT key
// of the bundle but the active and the prepared one may be named, so keys
// of earlier rotations can be revoked too.
func (s *LocalAuthorityService) RevokeJWTAuthority(ctx context.Context, req *localauthorityv1.RevokeJWTAuthorityRequest) (*localauthorityv1.RevokeJWTAuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	id := req.GetAuthorityId()
	if cause := s.validateJWTRevoke(ctx, la, id); cause != nil {
		return nil, s.refuse(ctx, codes.InvalidArgument, "invalid authority ID", cause, "local_authority_id", id)
	}
	if err := la.RevokeJWTKey(ctx, id); err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to revoke JWT authority", err, "local_authority_id", id)
	}
	s.api.bundle.invalidate()
	s.api.cfg.Log.Info("JWT authority revoked successfully", "local_authority_id", id)
	return &localauthorityv1.RevokeJWTAuthorityResponse{RevokedAuthority: &localauthorityv1.AuthorityState{AuthorityId: id}}, nil
}

func (s *LocalAuthorityService) validateJWTRevoke(ctx context.Context, la LocalAuthority, id string) error {
	if id == "" {
		return errors.New("no authority ID provided")
	}
	current, next := la.JWTSlots()
	if id == next.AuthorityID {
		if next.Status == ca.SlotPrepared {
			return errors.New("unable to use a prepared key")
		}
		return nil
	}
	if id == current.AuthorityID {
		return errors.New("unable to use current authority")
	}
	ok, err := la.HasJWTKey(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no JWT authority found with provided authority ID")
	}
	return nil
}

// GetX509AuthorityState implements localauthority/v1.
func (s *LocalAuthorityService) GetX509AuthorityState(ctx context.Context, _ *localauthorityv1.GetX509AuthorityStateRequest) (*localauthorityv1.GetX509AuthorityStateResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	current, next := la.X509Slots()
	if current.Status != ca.SlotActive {
		return nil, s.refuse(ctx, codes.Unavailable, "server is initializing", nil)
	}
	resp := &localauthorityv1.GetX509AuthorityStateResponse{}
	resp.Active, resp.Prepared, resp.Old = slotStates(current, next)
	return resp, nil
}

// PrepareX509Authority implements localauthority/v1.
func (s *LocalAuthorityService) PrepareX509Authority(ctx context.Context, _ *localauthorityv1.PrepareX509AuthorityRequest) (*localauthorityv1.PrepareX509AuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	if current, _ := la.X509Slots(); current.Status != ca.SlotActive {
		return nil, s.refuse(ctx, codes.Unavailable, "server is initializing", nil)
	}
	slot, err := la.PrepareX509CA(ctx)
	if err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to prepare X.509 authority", err)
	}
	// The prepared authority is in the bundle now: agents told at once
	// trust it before it signs anything.
	s.api.bundle.invalidate()
	return &localauthorityv1.PrepareX509AuthorityResponse{PreparedAuthority: authorityState(slot)}, nil
}

// ActivateX509Authority implements localauthority/v1.
func (s *LocalAuthorityService) ActivateX509Authority(ctx context.Context, req *localauthorityv1.ActivateX509AuthorityRequest) (*localauthorityv1.ActivateX509AuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	id := req.GetAuthorityId()
	_, next := la.X509Slots()
	if err := s.checkActivate(ctx, id, next); err != nil {
		return nil, err
	}
	slot, err := la.ActivateX509CA(ctx, id)
	if err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to activate X.509 authority", err, "local_authority_id", id)
	}
	return &localauthorityv1.ActivateX509AuthorityResponse{ActivatedAuthority: authorityState(slot)}, nil
}

// TaintX509Authority implements localauthority/v1. Agents see the mark in
// the bundle on their next sync and replace every SVID that chains to the
// authority; the server replaces its own at once.
func (s *LocalAuthorityService) TaintX509Authority(ctx context.Context, req *localauthorityv1.TaintX509AuthorityRequest) (*localauthorityv1.TaintX509AuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	id := req.GetAuthorityId()
	if la.IsUpstreamAuthority() {
		return nil, s.refuse(ctx, codes.FailedPrecondition, "local authority can't be tainted if there is an upstream authority", nil, "local_authority_id", id)
	}
	current, next := la.X509Slots()
	if err := s.checkTaint(ctx, id, current, next); err != nil {
		return nil, err
	}
	if err := la.TaintX509Authority(ctx, id); err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to taint X.509 authority", err, "local_authority_id", id)
	}
	s.api.bundle.invalidate()
	s.api.cfg.Log.Info("X.509 authority tainted successfully", "local_authority_id", id)
	return &localauthorityv1.TaintX509AuthorityResponse{TaintedAuthority: authorityState(next)}, nil
}

// TaintX509UpstreamAuthority implements localauthority/v1.
func (s *LocalAuthorityService) TaintX509UpstreamAuthority(ctx context.Context, req *localauthorityv1.TaintX509UpstreamAuthorityRequest) (*localauthorityv1.TaintX509UpstreamAuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	skid := strings.ToLower(req.GetSubjectKeyId())
	if !la.IsUpstreamAuthority() {
		return nil, s.refuse(ctx, codes.FailedPrecondition, "upstream authority is not configured", nil, "subject_key_id", skid)
	}
	if cause := validateUpstreamSKID(la, skid); cause != nil {
		return nil, s.refuse(ctx, codes.InvalidArgument, "provided subject key id is not valid", cause, "subject_key_id", skid)
	}
	if err := la.TaintX509Authority(ctx, skid); err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to taint upstream authority", err, "subject_key_id", skid)
	}
	s.api.bundle.invalidate()
	s.api.cfg.Log.Info("X.509 upstream authority tainted successfully", "subject_key_id", skid)
	return &localauthorityv1.TaintX509UpstreamAuthorityResponse{UpstreamAuthoritySubjectKeyId: skid}, nil
}

// validateUpstreamSKID is SPIRE's check that skid names the upstream
// certificate that signed the old local authority, not the current one.
func validateUpstreamSKID(la LocalAuthority, skid string) error {
	if skid == "" {
		return errors.New("no subject key ID provided")
	}
	current, next := la.X509Slots()
	switch {
	case skid == current.UpstreamAuthorityID:
		return errors.New("unable to use upstream authority singing current authority")
	case skid != next.UpstreamAuthorityID:
		return errors.New("upstream authority didn't sign the old local authority")
	case next.Status == ca.SlotPrepared:
		return errors.New("only upstream authorities signing an old authority can be used")
	}
	return nil
}

// RevokeX509Authority implements localauthority/v1.
func (s *LocalAuthorityService) RevokeX509Authority(ctx context.Context, req *localauthorityv1.RevokeX509AuthorityRequest) (*localauthorityv1.RevokeX509AuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	id := req.GetAuthorityId()
	if la.IsUpstreamAuthority() {
		return nil, s.refuse(ctx, codes.FailedPrecondition, "local authority can't be revoked if there is an upstream authority", nil, "local_authority_id", id)
	}
	current, next := la.X509Slots()
	var cause error
	switch {
	case id == "":
		cause = errors.New("no authority ID provided")
	case id == current.AuthorityID:
		cause = errors.New("unable to use current authority")
	case id != next.AuthorityID, next.Status != ca.SlotOld:
		cause = errors.New("only Old local authority can be revoked")
	}
	if cause != nil {
		return nil, s.refuse(ctx, codes.InvalidArgument, "invalid authority ID", cause, "local_authority_id", id)
	}
	if err := la.RevokeX509Authority(ctx, id); err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to revoke X.509 authority", err, "local_authority_id", id)
	}
	s.api.bundle.invalidate()
	s.api.cfg.Log.Info("X.509 authority revoked successfully", "local_authority_id", id)
	return &localauthorityv1.RevokeX509AuthorityResponse{RevokedAuthority: &localauthorityv1.AuthorityState{AuthorityId: id}}, nil
}

// RevokeX509UpstreamAuthority implements localauthority/v1.
func (s *LocalAuthorityService) RevokeX509UpstreamAuthority(ctx context.Context, req *localauthorityv1.RevokeX509UpstreamAuthorityRequest) (*localauthorityv1.RevokeX509UpstreamAuthorityResponse, error) {
	la, err := s.authority()
	if err != nil {
		return nil, err
	}
	skid := strings.ToLower(req.GetSubjectKeyId())
	if !la.IsUpstreamAuthority() {
		return nil, s.refuse(ctx, codes.FailedPrecondition, "upstream authority is not configured", nil, "subject_key_id", skid)
	}
	if cause := validateUpstreamSKID(la, skid); cause != nil {
		return nil, s.refuse(ctx, codes.InvalidArgument, "invalid subject key ID", cause, "subject_key_id", skid)
	}
	if err := la.RevokeX509Authority(ctx, skid); err != nil {
		return nil, s.refuse(ctx, codes.Internal, "failed to revoke X.509 upstream authority", err, "subject_key_id", skid)
	}
	s.api.bundle.invalidate()
	s.api.cfg.Log.Info("X.509 upstream authority successfully revoked", "subject_key_id", skid)
	return &localauthorityv1.RevokeX509UpstreamAuthorityResponse{UpstreamAuthoritySubjectKeyId: skid}, nil
}

// localAuthorityAuditFields are SPIRE's audit fields of localauthority/v1
// requests: the authority or upstream subject key ID they name.
func localAuthorityAuditFields(req any) []any {
	type authorityIDer interface{ GetAuthorityId() string }
	type skider interface{ GetSubjectKeyId() string }
	switch r := req.(type) {
	case authorityIDer:
		if id := r.GetAuthorityId(); id != "" {
			return []any{"local_authority_id", id}
		}
	case skider:
		if id := r.GetSubjectKeyId(); id != "" {
			return []any{"subject_key_id", id}
		}
	}
	return nil
}
