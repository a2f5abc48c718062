package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

// rotateInterval is how often Run checks the slots; the jitter keeps several
// servers sharing a datastore from checking in lockstep.
const (
	rotateInterval = 10 * time.Second
	rotateJitter   = time.Second
)

// Run calls Rotate until ctx ends, logging failures: a failed step is
// retried on the next tick. It wakes every ten seconds (jittered) and also
// right after each rotation deadline (half-life, activation, expiry), so a
// short-lived CA is never left to expire between two ticks. It returns nil
// when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	fails := failureLog{log: m.cfg.Log, every: rotateFailLogEvery}
	for {
		wait := rotateInterval + time.Duration(mrand.Int64N(int64(2*rotateJitter))) - rotateJitter
		if next, ok := m.nextDeadline(m.cfg.Clock()); ok {
			// A little after the deadline, so the step sees it passed.
			wait = min(wait, max(next.Sub(m.cfg.Clock())+deadlineSlack, deadlineSlack))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		switch err := m.Rotate(ctx); {
		case err == nil:
			fails.succeeded()
		case ctx.Err() == nil:
			fails.failed(m.cfg.Clock(), err)
		}
	}
}

// rotateFailLogEvery is how often a rotation step that keeps failing is
// logged again.
const rotateFailLogEvery = time.Minute

// failureLog logs a step that fails at every tick (the database away for
// a while, as servers sharing one ride out) once when it starts failing,
// then at most every interval with the count, and once when it works
// again, instead of an ERROR line every ten seconds.
type failureLog struct {
	log   *slog.Logger
	every time.Duration
	// n counts the failures since the last success; since and last are
	// when the first was and when one was last logged.
	n           int
	since, last time.Time
}

func (f *failureLog) failed(now time.Time, err error) {
	f.n++
	switch {
	case f.n == 1:
		f.since, f.last = now, now
		f.log.Error("ca: rotation step failed", "error", err)
	case now.Sub(f.last) >= f.every:
		f.last = now
		f.log.Error("ca: rotation step still failing", "error", err, "attempts", f.n, "failing_for", now.Sub(f.since).Round(time.Second))
	}
}

func (f *failureLog) succeeded() {
	if f.n > 0 {
		f.log.Info("ca: rotation step succeeded again", "failed_attempts", f.n)
		f.n = 0
	}
}

// deadlineSlack is how long after a rotation deadline Run wakes.
const deadlineSlack = 50 * time.Millisecond

// nextDeadline returns the earliest moment after now at which Rotate would
// change something for the X.509 CA or the JWT key.
func (m *Manager) nextDeadline(now time.Time) (time.Time, bool) {
	m.mu.RLock()
	x509Slots, jwtSlots := m.x509, m.jwt
	m.mu.RUnlock()
	var best time.Time
	consider := func(active, prepared *slotMeta) {
		if active == nil {
			return
		}
		life := active.notAfter.Sub(active.issuedAt)
		cands := []time.Time{active.notAfter}
		if prepared == nil {
			cands = append(cands, active.issuedAt.Add(life/2))
		} else {
			act := active.issuedAt.Add(life / 6 * 5)
			if late := prepared.issuedAt.Add(life / 3); late.After(act) {
				act = late
			}
			cands = append(cands, act)
		}
		for _, c := range cands {
			if c.After(now) && (best.IsZero() || c.Before(best)) {
				best = c
			}
		}
	}
	if a := activeOf(x509Slots[:]); a != nil {
		var p *slotMeta
		if pr := preparedOf(x509Slots[:]); pr != nil {
			p = &pr.slotMeta
		}
		consider(&a.slotMeta, p)
	}
	if a := activeOf(jwtSlots[:]); a != nil {
		var p *slotMeta
		if pr := preparedOf(jwtSlots[:]); pr != nil {
			p = &pr.slotMeta
		}
		consider(&a.slotMeta, p)
	}
	return best, !best.IsZero()
}

// Rotate performs one rotation step at the configured clock's time: it
// activates a successor when the active authority is past five sixths of its
// life or expired, prepares and publishes one when it is past half, and
// prunes expired authorities from the bundle. Every change of the slots is
// persisted in the journal before it takes effect.
func (m *Manager) Rotate(ctx context.Context) error {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	now := m.cfg.Clock()
	var errs []error
	if err := m.rotateX509(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if err := m.rotateJWT(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// Only with this server's authorities in force: its own journal
		// is then never among the expired.
		if err := m.pruneJournals(ctx, now); err != nil {
			errs = append(errs, err)
		}
	}
	prune := m.cfg.Metrics.StartCall("ca", "manager", "bundle", "prune")
	changed, err := m.cfg.Store.PruneBundle(ctx, m.cfg.TrustDomain.Name(), now)
	prune.Done(&err)
	if err != nil {
		errs = append(errs, fmt.Errorf("ca: prune bundle: %w", err))
	} else if changed {
		m.cfg.Metrics.IncrCounter([]string{"ca", "manager", "bundle", "pruned"}, 1)
		m.cfg.Log.Info("ca: pruned expired authorities from the bundle")
	}
	return errors.Join(errs...)
}

// pastFraction reports whether now is past the given fraction of a slot's life.
func pastFraction(s *slotMeta, now time.Time, num, den int64) bool {
	life := s.notAfter.Sub(s.issuedAt)
	// Divide first: multiplying a multi-year lifetime in nanoseconds could
	// overflow.
	return !now.Before(s.issuedAt.Add(life / time.Duration(den) * time.Duration(num)))
}

// readyToActivate: the active authority is past five sixths of its life and
// the prepared one has been in the bundle for at least a third of the active
// one's life, the gap a half-life preparation normally gives relying parties
// to fetch it. A successor prepared late (after downtime, or after failed
// steps) therefore waits, at the latest until the active one expires.
func readyToActivate(active, prepared *slotMeta, now time.Time) bool {
	if !pastFraction(active, now, 5, 6) {
		return false
	}
	life := active.notAfter.Sub(active.issuedAt)
	return !now.Before(prepared.issuedAt.Add(life / 3))
}

// freeSlot picks the slot index a new authority goes into: the one not
// holding the slot to keep (active, else prepared).
func freeSlot(keep *slotMeta) int {
	if keep == nil {
		return 0
	}
	return 1 - keep.index
}

func (m *Manager) rotateX509(ctx context.Context, now time.Time) error {
	m.mu.RLock()
	slots := m.x509
	m.mu.RUnlock()
	next, changed, err := rotateSlots(ctx, now, slots, slotKind[x509Slot, *x509Slot]{
		name:      "X.509 CA",
		prepare:   m.prepareX509,
		publish:   m.publishX509,
		published: m.x509Published,
		attrs:     func(s *x509Slot) []any { return []any{"not_after", s.notAfter} },
		log:       m.cfg.Log,
	})
	if err != nil || !changed {
		return err
	}
	if err := m.persist(ctx, next, m.jwt); err != nil {
		return err
	}
	m.mu.Lock()
	m.x509 = next
	m.mu.Unlock()
	if act := activeOf(next[:]); act != nil && act != activeOf(slots[:]) {
		m.x509Activated(act.notAfter)
	}
	return nil
}

func (m *Manager) rotateJWT(ctx context.Context, now time.Time) error {
	m.mu.RLock()
	slots := m.jwt
	m.mu.RUnlock()
	next, changed, err := rotateSlots(ctx, now, slots, slotKind[jwtSlot, *jwtSlot]{
		name:      "JWT key",
		prepare:   m.prepareJWT,
		publish:   m.publishJWT,
		published: m.jwtPublished,
		attrs:     func(s *jwtSlot) []any { return []any{"kid", s.kid} },
		log:       m.cfg.Log,
	})
	if err != nil || !changed {
		return err
	}
	if err := m.persist(ctx, m.x509, next); err != nil {
		return err
	}
	m.mu.Lock()
	m.jwt = next
	m.mu.Unlock()
	if act := activeOf(next[:]); act != nil && act != activeOf(slots[:]) {
		m.jwtActivated()
	}
	return nil
}

// slotKind is what differs between rotating X.509 CAs and JWT keys; the
// rotation rules themselves live once, in rotateSlots.
type slotKind[T any, S interface {
	*T
	slotPtr
}] struct {
	name      string
	prepare   func(ctx context.Context, idx int, now time.Time) (S, error)
	publish   func(ctx context.Context, s S) error
	published func(ctx context.Context, s S) (bool, error)
	attrs     func(s S) []any
	log       *slog.Logger
}

// rotateSlots performs one rotation step on a pair of slots and returns the
// new pair and whether it changed; the caller persists and installs it.
func rotateSlots[T any, S interface {
	*T
	slotPtr
}](ctx context.Context, now time.Time, slots [2]S, k slotKind[T, S]) ([2]S, bool, error) {
	next := slots
	changed := false
	set := func(s S) { next[s.meta().index] = s; changed = true }
	// withStatus copies a slot with another status, so the pair read by
	// signers is never modified in place.
	withStatus := func(s S, st status, dropKey bool) S {
		c := *s
		cp := S(&c)
		cp.meta().status = st
		if dropKey {
			cp.meta().key = nil
		}
		return cp
	}
	retire := func(s S) { set(withStatus(s, statusOld, true)) }

	active, prepared := activeOf(next[:]), preparedOf(next[:])
	if prepared != nil && !now.Before(prepared.meta().notAfter) {
		retire(prepared)
		prepared = nil
	}
	if active == nil || !now.Before(active.meta().notAfter) {
		if active != nil {
			retire(active)
		}
		if prepared != nil {
			// Publishing again is idempotent and makes sure the successor
			// is in the bundle before it signs anything.
			if err := k.publish(ctx, prepared); err != nil {
				return slots, false, err
			}
			set(withStatus(prepared, statusActive, false))
			prepared = nil
		} else {
			var keep *slotMeta
			if active != nil {
				keep = active.meta()
			}
			s, err := k.prepare(ctx, freeSlot(keep), now)
			if err != nil {
				return slots, false, err
			}
			s.meta().status = statusActive
			set(s)
		}
		active = activeOf(next[:])
	}
	if prepared == nil && pastFraction(active.meta(), now, 1, 2) {
		s, err := k.prepare(ctx, freeSlot(active.meta()), now)
		if err != nil {
			return slots, false, err
		}
		set(s)
		prepared = s
		k.log.Info("ca: prepared "+k.name, append([]any{"slot", slotNames[s.meta().index]}, k.attrs(s)...)...)
	}
	if prepared != nil && readyToActivate(active.meta(), prepared.meta(), now) {
		published, err := k.published(ctx, prepared)
		if err != nil {
			return slots, false, err
		}
		if published {
			retire(active)
			c := withStatus(prepared, statusActive, false)
			set(c)
			k.log.Info("ca: activated "+k.name, append([]any{"slot", slotNames[c.meta().index]}, k.attrs(c)...)...)
		} else {
			// The bundle lost it (restored backup, manual edit): publish
			// again and give relying parties another round to fetch it.
			k.log.Warn("ca: prepared " + k.name + " missing from the bundle; republishing before activation")
			if err := k.publish(ctx, prepared); err != nil {
				return slots, false, err
			}
		}
	}
	return next, changed, nil
}

// persist writes this server's journal. It is found again by the active
// X.509 CA's authority ID (the prepared one's before any is active), and
// pruned by other servers once the last of its authorities expired.
func (m *Manager) persist(ctx context.Context, x [2]*x509Slot, j [2]*jwtSlot) error {
	data, err := encodeJournal(x, j)
	if err != nil {
		return fmt.Errorf("ca: journal: encode: %w", err)
	}
	s := activeOf(x[:])
	if s == nil {
		s = preparedOf(x[:])
	}
	if s == nil {
		// Nothing to find it by, as SPIRE: a restart starts afresh,
		// which loses nothing the slots hold yet.
		m.cfg.Log.Debug("ca: no X.509 CA yet; the journal is written with the first")
		return nil
	}
	id, err := authorityIDOf(s.cert.PublicKey)
	if err != nil {
		return fmt.Errorf("ca: journal: %w", err)
	}
	var expires time.Time
	for _, s := range x {
		if s != nil && s.notAfter.After(expires) {
			expires = s.notAfter
		}
	}
	for _, s := range j {
		if s != nil && s.notAfter.After(expires) {
			expires = s.notAfter
		}
	}
	name := m.journalName
	if name == "" {
		// Two servers never hold one key, so the first authority names
		// the journal uniquely for good.
		name = journalPrefix + id
	}
	rec := &datastore.CAJournal{Name: name, ActiveX509AuthorityID: id, ExpiresAt: expires.Unix(), Data: data}
	if err := m.cfg.Store.SetCAJournal(ctx, rec); err != nil {
		return fmt.Errorf("ca: journal: store: %w", err)
	}
	if m.journalName == "" {
		m.cfg.Log.Info("ca: created this server's CA journal", "ca_journal", name, "local_authority_id", id)
		m.journalName = name
	}
	return nil
}

// authorityIDOf is the authority ID a journal is found by: the subject key
// ID (hex) of the CA's public key, computed from the key rather than read
// from a certificate an upstream authority may have given another one.
func authorityIDOf(pub any) (string, error) {
	ski, err := subjectKeyID(pub)
	if err != nil {
		return "", err
	}
	return KeyIDString(ski), nil
}

// pruneJournals deletes, about hourly, the journals of servers gone for
// good: those whose authorities all expired. Every server runs it; the
// database decides, and a live server's own journal always holds an
// unexpired authority.
func (m *Manager) pruneJournals(ctx context.Context, now time.Time) error {
	if now.Sub(m.journalsPruned) < journalPruneInterval {
		return nil
	}
	n, err := m.cfg.Store.PruneCAJournals(ctx, now)
	if err != nil {
		return fmt.Errorf("ca: prune CA journals: %w", err)
	}
	m.journalsPruned = now
	if n > 0 {
		m.cfg.Log.Info("ca: pruned the CA journals of servers whose authorities all expired", "count", n)
	}
	return nil
}

// prepareX509 creates a key in slot idx (replacing the old one), has it
// certified, and publishes the trust anchor. The slot comes back prepared.
func (m *Manager) prepareX509(ctx context.Context, idx int, now time.Time) (_ *x509Slot, err error) {
	defer m.cfg.Metrics.StartCall("ca", "manager", "x509_ca", "prepare").Done(&err)
	key, err := m.cfg.KeyManager.GenerateKey(ctx, x509KeyIDs[idx], m.cfg.CAKeyType)
	if err != nil {
		return nil, fmt.Errorf("ca: prepare X.509 CA: %w", err)
	}
	var s *x509Slot
	if m.cfg.Upstream == nil {
		s, err = m.selfSignCA(ctx, key, now)
	} else {
		s, err = m.upstreamSignCA(ctx, key, now)
	}
	if err != nil {
		return nil, err
	}
	s.index, s.status, s.key, s.issuedAt = idx, statusPrepared, key, now
	if err := m.publishX509(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

func (m *Manager) prepareJWT(ctx context.Context, idx int, now time.Time) (_ *jwtSlot, err error) {
	defer m.cfg.Metrics.StartCall("ca", "manager", "jwt_key", "prepare").Done(&err)
	key, err := m.cfg.KeyManager.GenerateKey(ctx, jwtKeyIDs[idx], m.cfg.JWTKeyType)
	if err != nil {
		return nil, fmt.Errorf("ca: prepare JWT key: %w", err)
	}
	kid, err := newKeyID()
	if err != nil {
		return nil, fmt.Errorf("ca: prepare JWT key: %w", err)
	}
	s := &jwtSlot{
		slotMeta: slotMeta{
			index: idx, status: statusPrepared, key: key, issuedAt: now,
			// Whole seconds: the bundle records expires_at in seconds, and
			// tokens must not outlive what the bundle says.
			notAfter: time.Unix(now.Add(m.cfg.CATTL).Unix(), 0),
		},
		kid: kid,
		pub: key.Public(),
	}
	if err := m.publishJWT(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// newKeyID returns a random JWT key ID. It must be unique across rotations:
// the bundle identifies JWT authorities by key ID, and slots are reused.
func newKeyID() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (m *Manager) publishX509(ctx context.Context, s *x509Slot) error {
	b := &types.Bundle{TrustDomain: m.cfg.TrustDomain.Name()}
	for _, r := range s.roots {
		b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: r.Raw})
	}
	if _, err := m.cfg.Store.AppendBundle(ctx, b); err != nil {
		return fmt.Errorf("ca: publish X.509 authority: %w", err)
	}
	return nil
}

// publishJWTTimeout bounds publishing a JWT key upstream, as in SPIRE.
const publishJWTTimeout = 5 * time.Second

// publishJWT puts a JWT key in the bundle. With an upstream that publishes
// JWT keys, the key goes upstream and the bundle receives the keys the
// upstream answers with, as SPIRE does; an upstream that cannot publish
// them is warned about once and the key is published locally.
func (m *Manager) publishJWT(ctx context.Context, s *jwtSlot) error {
	key, err := jwtAuthority(s)
	if err != nil {
		return fmt.Errorf("ca: publish JWT authority: %w", err)
	}
	if p, ok := m.cfg.Upstream.(upstream.JWTKeyPublisher); ok {
		pctx, cancel := context.WithTimeout(ctx, publishJWTTimeout)
		keys, err := p.PublishJWTKey(pctx, key)
		cancel()
		switch {
		case errors.Is(err, errors.ErrUnsupported):
			m.jwtUnsupportedOnce.Do(func() {
				m.cfg.Log.Warn("ca: the upstream authority does not support JWT-SVIDs; workloads managed by this server may have trouble communicating with workloads outside this cluster when using JWT-SVIDs")
			})
		case err != nil:
			return fmt.Errorf("ca: publish JWT authority upstream: %w", err)
		case len(keys) == 0:
			// Nothing to add; activation waits until the key is in the
			// bundle (jwtPublished) and publishes again.
			m.cfg.Log.Warn("ca: the upstream authority returned no JWT keys", "kid", s.kid)
			return nil
		default:
			return m.appendJWTKeys(ctx, keys)
		}
	}
	return m.appendJWTKeys(ctx, []*types.JWTKey{key})
}

// appendJWTLocal puts a JWT key in the bundle without asking the upstream:
// at start-up, where the key was published when it was prepared.
func (m *Manager) appendJWTLocal(ctx context.Context, s *jwtSlot) error {
	key, err := jwtAuthority(s)
	if err != nil {
		return fmt.Errorf("ca: publish JWT authority: %w", err)
	}
	return m.appendJWTKeys(ctx, []*types.JWTKey{key})
}

func jwtAuthority(s *jwtSlot) (*types.JWTKey, error) {
	pub, err := x509.MarshalPKIXPublicKey(s.pub)
	if err != nil {
		return nil, err
	}
	return &types.JWTKey{PublicKey: pub, KeyId: s.kid, ExpiresAt: s.notAfter.Unix()}, nil
}

func (m *Manager) appendJWTKeys(ctx context.Context, keys []*types.JWTKey) error {
	b := &types.Bundle{TrustDomain: m.cfg.TrustDomain.Name(), JwtAuthorities: keys}
	if _, err := m.cfg.Store.AppendBundle(ctx, b); err != nil {
		return fmt.Errorf("ca: publish JWT authority: %w", err)
	}
	return nil
}

func (m *Manager) fetchBundle(ctx context.Context) (*types.Bundle, error) {
	b, err := m.cfg.Store.FetchBundle(ctx, m.cfg.TrustDomain.Name())
	if errors.Is(err, datastore.ErrNotFound) {
		return &types.Bundle{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: fetch bundle: %w", err)
	}
	return b, nil
}

func (m *Manager) x509Published(ctx context.Context, s *x509Slot) (bool, error) {
	b, err := m.fetchBundle(ctx)
	if err != nil {
		return false, err
	}
	for _, r := range s.roots {
		found := false
		for _, a := range b.GetX509Authorities() {
			if string(a.GetAsn1()) == string(r.Raw) {
				found = true
				break
			}
		}
		if !found {
			return false, nil
		}
	}
	return true, nil
}

func (m *Manager) jwtPublished(ctx context.Context, s *jwtSlot) (bool, error) {
	b, err := m.fetchBundle(ctx)
	if err != nil {
		return false, err
	}
	for _, a := range b.GetJwtAuthorities() {
		if a.GetKeyId() == s.kid {
			return true, nil
		}
	}
	return false, nil
}

// load finds this server's journal and attaches each active or prepared
// slot's key. A key missing from the key manager (a memory key manager
// after a restart) retires its slot; a key that differs from the recorded
// one is an error.
func (m *Manager) load(ctx context.Context) error {
	rec, err := m.findJournal(ctx)
	if err != nil || rec == nil {
		return err
	}
	xs, js, err := decodeJournal(rec.Data)
	if err != nil {
		return fmt.Errorf("%w (CA journal %q)", err, rec.Name)
	}
	m.journalName = rec.Name
	for i, s := range xs {
		if s == nil || s.status == statusOld {
			continue
		}
		key, err := m.attachKey(ctx, x509KeyIDs[i], s.cert.PublicKey)
		if err != nil {
			return err
		}
		if key == nil {
			s.status = statusOld
			continue
		}
		s.key = key
	}
	for i, s := range js {
		if s == nil || s.status == statusOld {
			continue
		}
		key, err := m.attachKey(ctx, jwtKeyIDs[i], s.pub)
		if err != nil {
			return err
		}
		if key == nil {
			s.status = statusOld
			continue
		}
		s.key = key
	}
	m.x509, m.jwt = xs, js

	// Make sure what will sign is published, even if the bundle was lost.
	for _, s := range xs {
		if s != nil && s.status != statusOld {
			if err := m.publishX509(ctx, s); err != nil {
				return err
			}
		}
	}
	for _, s := range js {
		if s != nil && s.status != statusOld {
			if err := m.appendJWTLocal(ctx, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// findJournal returns this server's journal among those of every server
// sharing the datastore: the one whose active X.509 CA key the key manager
// holds, as SPIRE finds its own. The single journal of older releases
// (legacyJournalName, no authority recorded) is this server's if its
// active X.509 CA key is. Nil when there is none: a new server, or one
// whose keys are gone.
func (m *Manager) findJournal(ctx context.Context) (*datastore.CAJournal, error) {
	var ids []string
	for _, kid := range x509KeyIDs {
		key, err := m.cfg.KeyManager.GetKey(ctx, kid)
		if errors.Is(err, keymanager.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ca: journal: get key %q: %w", kid, err)
		}
		id, err := authorityIDOf(key.Public())
		if err != nil {
			return nil, fmt.Errorf("ca: journal: key %q: %w", kid, err)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rec, err := m.cfg.Store.FindCAJournal(ctx, ids)
	if err == nil {
		return rec, nil
	}
	if !errors.Is(err, datastore.ErrNotFound) {
		return nil, fmt.Errorf("ca: journal: find: %w", err)
	}
	rec, err = m.cfg.Store.FetchCAJournal(ctx, legacyJournalName)
	if errors.Is(err, datastore.ErrNotFound) {
		m.cfg.Log.Info("ca: no CA journal matches this server's keys; starting a new one")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: journal: fetch: %w", err)
	}
	if rec.ActiveX509AuthorityID != "" {
		// Claimed since, by the server whose keys it names.
		m.cfg.Log.Info("ca: no CA journal matches this server's keys; starting a new one")
		return nil, nil
	}
	xs, _, err := decodeJournal(rec.Data)
	if err != nil {
		return nil, fmt.Errorf("%w (CA journal %q)", err, rec.Name)
	}
	if s := activeOf(xs[:]); s != nil {
		id, err := authorityIDOf(s.cert.PublicKey)
		if err == nil && slices.Contains(ids, id) {
			return rec, nil
		}
	}
	m.cfg.Log.Warn("ca: the CA journal of an older release does not match this server's keys: another server's, or this server's keys were replaced; starting a new one",
		"ca_journal", legacyJournalName)
	return nil, nil
}

func (m *Manager) attachKey(ctx context.Context, id string, want any) (keymanager.Key, error) {
	key, err := m.cfg.KeyManager.GetKey(ctx, id)
	if errors.Is(err, keymanager.ErrNotFound) {
		m.cfg.Log.Warn("ca: journal names a key the key manager no longer holds; preparing a new one", "key_id", id)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: journal: get key %q: %w", id, err)
	}
	if !publicKeyEqual(key.Public(), want) {
		return nil, fmt.Errorf("%w: key %q", ErrKeyMismatch, id)
	}
	return key, nil
}
