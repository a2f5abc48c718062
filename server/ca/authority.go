package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Forced rotation, as SPIRE's localauthority/v1 drives it: an operator
// prepares a successor ahead of schedule, activates it, taints the
// authority it replaced (agents then re-sign everything that chains to it)
// and finally revokes it (it leaves the bundle). The slot model is SPIRE's:
// the current slot holds the active authority, the next slot a prepared or
// an old one.

// SlotStatus is a slot's state as localauthority/v1 reports it.
type SlotStatus string

// Slot statuses; an empty slot has none.
const (
	SlotPrepared SlotStatus = SlotStatus(statusPrepared)
	SlotActive   SlotStatus = SlotStatus(statusActive)
	SlotOld      SlotStatus = SlotStatus(statusOld)
)

// Slot describes one X.509 CA or JWT key slot.
type Slot struct {
	// AuthorityID names the authority: the hex subject key ID of the CA
	// certificate, or the JWT key ID. Empty for an empty slot.
	AuthorityID string
	// UpstreamAuthorityID is the hex subject key ID of the upstream
	// certificate that signed the CA (its authority key ID); empty when
	// the CA is self-signed or for JWT keys.
	UpstreamAuthorityID string
	NotAfter            time.Time
	Status              SlotStatus
}

// AuthorityError is an authority operation the bundle refuses (already
// tainted, not tainted, unknown). Msg is worded as SPIRE's datastore words
// it, since its CLI prints it.
type AuthorityError struct {
	NotFound bool
	Msg      string
}

func (e *AuthorityError) Error() string { return "ca: " + e.Msg }

// ErrNotReady means there is no active authority yet.
var ErrNotReady = errors.New("ca: server is initializing")

// KeyIDString renders a subject or authority key ID as SPIRE does: lower
// case hex with an even number of digits.
func KeyIDString(id []byte) string { return fmt.Sprintf("%x", id) }

func x509SlotInfo(s *x509Slot) Slot {
	if s == nil {
		return Slot{}
	}
	out := Slot{AuthorityID: KeyIDString(s.cert.SubjectKeyId), NotAfter: s.notAfter, Status: SlotStatus(s.status)}
	if len(s.intermediates) > 0 { // upstream-signed
		out.UpstreamAuthorityID = KeyIDString(s.cert.AuthorityKeyId)
	}
	return out
}

func jwtSlotInfo(s *jwtSlot) Slot {
	if s == nil {
		return Slot{}
	}
	return Slot{AuthorityID: s.kid, NotAfter: s.notAfter, Status: SlotStatus(s.status)}
}

// currentAndNext returns the active slot and the other one.
func currentAndNext[S slotPtr](slots [2]S) (cur, next S) {
	cur = activeOf(slots[:])
	var zero S
	if cur == zero {
		return zero, zero
	}
	return cur, slots[1-cur.meta().index]
}

// X509Slots returns the current (active) X.509 CA slot and the next one
// (prepared, old or empty). Both are empty before the first activation.
func (m *Manager) X509Slots() (current, next Slot) {
	m.mu.RLock()
	c, n := currentAndNext(m.x509)
	m.mu.RUnlock()
	return x509SlotInfo(c), x509SlotInfo(n)
}

// JWTSlots is X509Slots for the JWT signing keys.
func (m *Manager) JWTSlots() (current, next Slot) {
	m.mu.RLock()
	c, n := currentAndNext(m.jwt)
	m.mu.RUnlock()
	return jwtSlotInfo(c), jwtSlotInfo(n)
}

// IsUpstreamAuthority reports whether an upstream authority signs the CA.
func (m *Manager) IsUpstreamAuthority() bool { return m.cfg.Upstream != nil }

// PrepareX509CA prepares a new X.509 CA in the next slot now, replacing
// whatever it held, publishes its trust anchor and returns the slot. The
// scheduled rotation activates it later unless ActivateX509CA does first.
func (m *Manager) PrepareX509CA(ctx context.Context) (Slot, error) {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	m.mu.RLock()
	slots := m.x509
	m.mu.RUnlock()
	cur := activeOf(slots[:])
	if cur == nil {
		return Slot{}, ErrNotReady
	}
	s, err := m.prepareX509(ctx, freeSlot(&cur.slotMeta), m.cfg.Clock())
	if err != nil {
		return Slot{}, err
	}
	slots[s.index] = s
	if err := m.persist(ctx, slots, m.jwt); err != nil {
		return Slot{}, err
	}
	m.mu.Lock()
	m.x509 = slots
	m.mu.Unlock()
	info := x509SlotInfo(s)
	m.cfg.Log.Info("ca: prepared X.509 CA on request", "slot", slotNames[s.index], "local_authority_id", info.AuthorityID,
		"upstream_authority_id", info.UpstreamAuthorityID, "not_after", s.notAfter)
	return info, nil
}

// ActivateX509CA makes the prepared X.509 CA named authorityID active and
// the active one old, and returns the new current slot. It refuses unless
// the next slot holds exactly that prepared authority.
func (m *Manager) ActivateX509CA(ctx context.Context, authorityID string) (Slot, error) {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	m.mu.RLock()
	slots := m.x509
	m.mu.RUnlock()
	cur, next := currentAndNext(slots)
	if cur == nil {
		return Slot{}, ErrNotReady
	}
	if next == nil || next.status != statusPrepared || x509SlotInfo(next).AuthorityID != authorityID {
		return Slot{}, fmt.Errorf("ca: X.509 authority %q is not the prepared one", authorityID)
	}
	// Publishing again is idempotent and makes sure the successor is in
	// the bundle before it signs anything.
	if err := m.publishX509(ctx, next); err != nil {
		return Slot{}, err
	}
	old, act := *cur, *next
	old.status, old.key = statusOld, nil
	act.status = statusActive
	slots[old.index], slots[act.index] = &old, &act
	if err := m.persist(ctx, slots, m.jwt); err != nil {
		return Slot{}, err
	}
	m.mu.Lock()
	m.x509 = slots
	m.mu.Unlock()
	m.x509Activated(act.notAfter)
	info := x509SlotInfo(&act)
	m.cfg.Log.Info("ca: activated X.509 CA on request", "slot", slotNames[act.index], "local_authority_id", info.AuthorityID,
		"upstream_authority_id", info.UpstreamAuthorityID, "not_after", act.notAfter)
	return info, nil
}

// PrepareJWTKey is PrepareX509CA for the JWT signing key.
func (m *Manager) PrepareJWTKey(ctx context.Context) (Slot, error) {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	m.mu.RLock()
	slots := m.jwt
	m.mu.RUnlock()
	cur := activeOf(slots[:])
	if cur == nil {
		return Slot{}, ErrNotReady
	}
	s, err := m.prepareJWT(ctx, freeSlot(&cur.slotMeta), m.cfg.Clock())
	if err != nil {
		return Slot{}, err
	}
	slots[s.index] = s
	if err := m.persist(ctx, m.x509, slots); err != nil {
		return Slot{}, err
	}
	m.mu.Lock()
	m.jwt = slots
	m.mu.Unlock()
	m.cfg.Log.Info("ca: prepared JWT key on request", "slot", slotNames[s.index], "local_authority_id", s.kid, "not_after", s.notAfter)
	return jwtSlotInfo(s), nil
}

// ActivateJWTKey is ActivateX509CA for the JWT signing key.
func (m *Manager) ActivateJWTKey(ctx context.Context, authorityID string) (Slot, error) {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	m.mu.RLock()
	slots := m.jwt
	m.mu.RUnlock()
	cur, next := currentAndNext(slots)
	if cur == nil {
		return Slot{}, ErrNotReady
	}
	if next == nil || next.status != statusPrepared || next.kid != authorityID {
		return Slot{}, fmt.Errorf("ca: JWT authority %q is not the prepared one", authorityID)
	}
	published, err := m.jwtPublished(ctx, next)
	if err != nil {
		return Slot{}, err
	}
	if !published {
		if err := m.publishJWT(ctx, next); err != nil {
			return Slot{}, err
		}
	}
	old, act := *cur, *next
	old.status, old.key = statusOld, nil
	act.status = statusActive
	slots[old.index], slots[act.index] = &old, &act
	if err := m.persist(ctx, m.x509, slots); err != nil {
		return Slot{}, err
	}
	m.mu.Lock()
	m.jwt = slots
	m.mu.Unlock()
	m.jwtActivated()
	m.cfg.Log.Info("ca: activated JWT key on request", "slot", slotNames[act.index], "local_authority_id", act.kid, "not_after", act.notAfter)
	return jwtSlotInfo(&act), nil
}

// TaintX509Authority marks the bundle's X.509 authority whose subject key
// ID is skid (hex) as tainted, which tells agents and downstream servers to
// replace everything that chains to it, and wakes X509AuthorityTainted's
// reader. It does not check which slot the authority is in; the caller
// (localauthority/v1) does.
func (m *Manager) TaintX509Authority(ctx context.Context, skid string) error {
	_, err := m.cfg.Store.ModifyBundle(ctx, m.cfg.TrustDomain.Name(), func(b *types.Bundle) error {
		found := false
		for _, a := range b.X509Authorities {
			c, err := x509.ParseCertificate(a.Asn1)
			if err != nil {
				return fmt.Errorf("ca: parse X.509 authority: %w", err)
			}
			if KeyIDString(c.SubjectKeyId) != skid {
				continue
			}
			if a.Tainted {
				return &AuthorityError{Msg: "root CA is already tainted"}
			}
			a.Tainted, found = true, true
		}
		if !found {
			return &AuthorityError{NotFound: true, Msg: "no ca found with provided subject key ID"}
		}
		return nil
	})
	if err != nil {
		return err
	}
	m.cfg.Log.Info("ca: X.509 authority tainted", "subject_key_id", skid)
	select {
	case m.taintedCh <- struct{}{}:
	default:
	}
	return nil
}

// X509AuthorityTainted is signalled after each TaintX509Authority, so the
// server can replace its own SVID at once, as its agents replace theirs.
// One reader only; signals coalesce.
func (m *Manager) X509AuthorityTainted() <-chan struct{} { return m.taintedCh }

// RevokeX509Authority removes the tainted X.509 authority whose subject
// key ID is skid from the bundle. An untainted one is refused: tainting
// first gives every agent the chance to stop using it.
func (m *Manager) RevokeX509Authority(ctx context.Context, skid string) error {
	_, err := m.cfg.Store.ModifyBundle(ctx, m.cfg.TrustDomain.Name(), func(b *types.Bundle) error {
		found := false
		var keep []*types.X509Certificate
		for _, a := range b.X509Authorities {
			c, err := x509.ParseCertificate(a.Asn1)
			if err != nil {
				return fmt.Errorf("ca: parse X.509 authority: %w", err)
			}
			if KeyIDString(c.SubjectKeyId) == skid {
				if !a.Tainted {
					return &AuthorityError{Msg: "it is not possible to revoke an untainted root CA"}
				}
				found = true
				continue
			}
			keep = append(keep, a)
		}
		if !found {
			return &AuthorityError{NotFound: true, Msg: "no root CA found with provided subject key ID"}
		}
		b.X509Authorities = keep
		return nil
	})
	if err != nil {
		return err
	}
	m.cfg.Log.Info("ca: X.509 authority revoked", "subject_key_id", skid)
	return nil
}

// TaintJWTKey marks the bundle's JWT key kid as tainted; agents then drop
// the JWT-SVIDs it signed and fetch new ones.
func (m *Manager) TaintJWTKey(ctx context.Context, kid string) error {
	_, err := m.cfg.Store.ModifyBundle(ctx, m.cfg.TrustDomain.Name(), func(b *types.Bundle) error {
		var hit *types.JWTKey
		for _, k := range b.JwtAuthorities {
			if k.KeyId != kid {
				continue
			}
			if k.Tainted {
				return &AuthorityError{Msg: "key is already tainted"}
			}
			if hit != nil {
				return &AuthorityError{Msg: "another JWT Key found with the same KeyID"}
			}
			hit = k
		}
		if hit == nil {
			return &AuthorityError{NotFound: true, Msg: "no JWT Key found with provided key ID"}
		}
		hit.Tainted = true
		return nil
	})
	if err != nil {
		return err
	}
	m.cfg.Log.Info("ca: JWT authority tainted", "local_authority_id", kid)
	return nil
}

// RevokeJWTKey removes the tainted JWT key kid from the bundle.
func (m *Manager) RevokeJWTKey(ctx context.Context, kid string) error {
	_, err := m.cfg.Store.ModifyBundle(ctx, m.cfg.TrustDomain.Name(), func(b *types.Bundle) error {
		found := false
		var keep []*types.JWTKey
		for _, k := range b.JwtAuthorities {
			if k.KeyId != kid {
				keep = append(keep, k)
				continue
			}
			if found {
				return &AuthorityError{Msg: "another key found with the same KeyID"}
			}
			if !k.Tainted {
				return &AuthorityError{Msg: "it is not possible to revoke an untainted key"}
			}
			found = true
		}
		if !found {
			return &AuthorityError{NotFound: true, Msg: "no JWT Key found with provided key ID"}
		}
		b.JwtAuthorities = keep
		return nil
	})
	if err != nil {
		return err
	}
	m.cfg.Log.Info("ca: JWT authority revoked", "local_authority_id", kid)
	return nil
}

// HasJWTKey reports whether the bundle holds a JWT key with this ID.
func (m *Manager) HasJWTKey(ctx context.Context, kid string) (bool, error) {
	b, err := m.fetchBundle(ctx)
	if err != nil {
		return false, err
	}
	for _, k := range b.GetJwtAuthorities() {
		if k.GetKeyId() == kid {
			return true, nil
		}
	}
	return false, nil
}
