package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
)

const (
	// journalPrefix heads the name of each server's journal, followed by
	// the first authority ID it was found by.
	journalPrefix = "ca/"
	// legacyJournalName is the single journal of releases before several
	// servers shared a database; its server claims it at the next write.
	legacyJournalName = "ca"
	// journalPruneInterval is how often expired journals are pruned.
	journalPruneInterval = time.Hour
)

const journalVersion = 1

type status string

const (
	// statusPrepared: published in the bundle, not yet signing.
	statusPrepared status = "prepared"
	// statusActive: signing now.
	statusActive status = "active"
	// statusOld: rotated out or unusable; kept for the record until its
	// slot is reused.
	statusOld status = "old"
)

var (
	slotNames   = [2]string{"A", "B"}
	x509KeyIDs  = [2]string{"x509-CA-A", "x509-CA-B"}
	jwtKeyIDs   = [2]string{"JWT-Signer-A", "JWT-Signer-B"}
	slotByNames = map[string]int{"A": 0, "B": 1}
)

// slotMeta is what X.509 and JWT slots share. Slots are immutable once
// built: a change of status is a new value, so signers can hold one without
// locking.
type slotMeta struct {
	index    int
	status   status
	key      keymanager.Key // nil for old slots
	issuedAt time.Time
	notAfter time.Time
}

func (s *slotMeta) meta() *slotMeta { return s }

type x509Slot struct {
	slotMeta
	cert *x509.Certificate
	// intermediates follow the leaf in every SVID: the CA certificate and
	// the upstream intermediates, or nothing for a self-signed CA.
	intermediates []*x509.Certificate
	// roots are the trust anchors published in the bundle.
	roots []*x509.Certificate
}

type jwtSlot struct {
	slotMeta
	kid string
	pub crypto.PublicKey
}

type slotPtr interface {
	comparable
	meta() *slotMeta
}

func withStatus[S slotPtr](slots []S, st status) S {
	var zero S
	for _, s := range slots {
		if s != zero && s.meta().status == st {
			return s
		}
	}
	return zero
}

func activeOf[S slotPtr](slots []S) S { return withStatus(slots, statusActive) }

func preparedOf[S slotPtr](slots []S) S { return withStatus(slots, statusPrepared) }

// journal is the persisted form of the slots. It is JSON so that an
// operator can read it; []byte fields are base64 DER.
type journal struct {
	Version int           `json:"version"`
	X509CAs []journalX509 `json:"x509_cas"`
	JWTKeys []journalJWT  `json:"jwt_keys"`
}

type journalX509 struct {
	Slot          string   `json:"slot"`
	KeyID         string   `json:"key_id"`
	Status        status   `json:"status"`
	Certificate   []byte   `json:"certificate"`
	Intermediates [][]byte `json:"intermediates,omitempty"`
	Roots         [][]byte `json:"roots"`
	PublicKey     []byte   `json:"public_key"`
	IssuedAt      int64    `json:"issued_at"`
	NotAfter      int64    `json:"not_after"`
}

type journalJWT struct {
	Slot      string `json:"slot"`
	KeyID     string `json:"key_id"`
	Kid       string `json:"kid"`
	Status    status `json:"status"`
	PublicKey []byte `json:"public_key"`
	IssuedAt  int64  `json:"issued_at"`
	NotAfter  int64  `json:"not_after"`
}

func encodeJournal(x [2]*x509Slot, j [2]*jwtSlot) ([]byte, error) {
	out := journal{Version: journalVersion, X509CAs: []journalX509{}, JWTKeys: []journalJWT{}}
	for _, s := range x {
		if s == nil {
			continue
		}
		pub, err := x509.MarshalPKIXPublicKey(s.cert.PublicKey)
		if err != nil {
			return nil, err
		}
		e := journalX509{
			Slot:        slotNames[s.index],
			KeyID:       x509KeyIDs[s.index],
			Status:      s.status,
			Certificate: s.cert.Raw,
			PublicKey:   pub,
			IssuedAt:    s.issuedAt.Unix(),
			NotAfter:    s.notAfter.Unix(),
		}
		// The CA certificate heads intermediates when upstream-signed; the
		// journal keeps only what follows it.
		if len(s.intermediates) > 0 {
			for _, c := range s.intermediates[1:] {
				e.Intermediates = append(e.Intermediates, c.Raw)
			}
		}
		for _, r := range s.roots {
			e.Roots = append(e.Roots, r.Raw)
		}
		out.X509CAs = append(out.X509CAs, e)
	}
	for _, s := range j {
		if s == nil {
			continue
		}
		pub, err := x509.MarshalPKIXPublicKey(s.pub)
		if err != nil {
			return nil, err
		}
		out.JWTKeys = append(out.JWTKeys, journalJWT{
			Slot:      slotNames[s.index],
			KeyID:     jwtKeyIDs[s.index],
			Kid:       s.kid,
			Status:    s.status,
			PublicKey: pub,
			IssuedAt:  s.issuedAt.Unix(),
			NotAfter:  s.notAfter.Unix(),
		})
	}
	return json.Marshal(out)
}

// decodeJournal parses and checks a journal. It trusts nothing: the blob
// comes from a database an attacker or a bug may have written. Keys are not
// attached here; slots come back without them.
func decodeJournal(data []byte) ([2]*x509Slot, [2]*jwtSlot, error) {
	var xs [2]*x509Slot
	var js [2]*jwtSlot
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return xs, js, fmt.Errorf("ca: journal: %w", err)
	}
	if j.Version != journalVersion {
		return xs, js, fmt.Errorf("ca: journal: unsupported version %d", j.Version)
	}
	for _, e := range j.X509CAs {
		s, err := decodeX509Entry(e)
		if err != nil {
			return xs, js, fmt.Errorf("ca: journal: X.509 CA slot %q: %w", e.Slot, err)
		}
		if xs[s.index] != nil {
			return xs, js, fmt.Errorf("ca: journal: X.509 CA slot %q recorded twice", e.Slot)
		}
		xs[s.index] = s
	}
	for _, e := range j.JWTKeys {
		s, err := decodeJWTEntry(e)
		if err != nil {
			return xs, js, fmt.Errorf("ca: journal: JWT key slot %q: %w", e.Slot, err)
		}
		if js[s.index] != nil {
			return xs, js, fmt.Errorf("ca: journal: JWT key slot %q recorded twice", e.Slot)
		}
		js[s.index] = s
	}
	if err := checkStatuses(xs[:]); err != nil {
		return xs, js, fmt.Errorf("ca: journal: X.509 CAs: %w", err)
	}
	if err := checkStatuses(js[:]); err != nil {
		return xs, js, fmt.Errorf("ca: journal: JWT keys: %w", err)
	}
	return xs, js, nil
}

func checkStatuses[S slotPtr](slots []S) error {
	var zero S
	counts := map[status]int{}
	for _, s := range slots {
		if s != zero {
			counts[s.meta().status]++
		}
	}
	if counts[statusActive] > 1 || counts[statusPrepared] > 1 {
		return fmt.Errorf("more than one active or prepared slot")
	}
	return nil
}

func decodeMeta(slot, keyID string, keyIDs [2]string, st status, issuedAt, notAfter int64) (slotMeta, error) {
	idx, ok := slotByNames[slot]
	if !ok {
		return slotMeta{}, fmt.Errorf("unknown slot name")
	}
	if keyID != keyIDs[idx] {
		return slotMeta{}, fmt.Errorf("key id %q does not belong to the slot", keyID)
	}
	switch st {
	case statusPrepared, statusActive, statusOld:
	default:
		return slotMeta{}, fmt.Errorf("unknown status %q", st)
	}
	if notAfter <= issuedAt {
		return slotMeta{}, fmt.Errorf("not_after is not after issued_at")
	}
	return slotMeta{index: idx, status: st, issuedAt: time.Unix(issuedAt, 0), notAfter: time.Unix(notAfter, 0)}, nil
}

func decodeX509Entry(e journalX509) (*x509Slot, error) {
	meta, err := decodeMeta(e.Slot, e.KeyID, x509KeyIDs, e.Status, e.IssuedAt, e.NotAfter)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(e.Certificate)
	if err != nil {
		return nil, err
	}
	if cert.NotAfter.Unix() != e.NotAfter {
		return nil, fmt.Errorf("not_after disagrees with the certificate")
	}
	pub, err := x509.ParsePKIXPublicKey(e.PublicKey)
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(pub, cert.PublicKey) {
		return nil, fmt.Errorf("public key disagrees with the certificate")
	}
	if len(e.Roots) == 0 {
		return nil, fmt.Errorf("no roots")
	}
	s := &x509Slot{slotMeta: meta, cert: cert}
	for _, der := range e.Roots {
		r, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		s.roots = append(s.roots, r)
	}
	upstreamSigned := !(len(s.roots) == 1 && s.roots[0].Equal(cert))
	if upstreamSigned {
		s.intermediates = append(s.intermediates, cert)
	} else if len(e.Intermediates) > 0 {
		return nil, fmt.Errorf("self-signed CA with intermediates")
	}
	for _, der := range e.Intermediates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("intermediate: %w", err)
		}
		s.intermediates = append(s.intermediates, c)
	}
	return s, nil
}

func decodeJWTEntry(e journalJWT) (*jwtSlot, error) {
	meta, err := decodeMeta(e.Slot, e.KeyID, jwtKeyIDs, e.Status, e.IssuedAt, e.NotAfter)
	if err != nil {
		return nil, err
	}
	if e.Kid == "" {
		return nil, fmt.Errorf("empty kid")
	}
	pub, err := x509.ParsePKIXPublicKey(e.PublicKey)
	if err != nil {
		return nil, err
	}
	return &jwtSlot{slotMeta: meta, kid: e.Kid, pub: pub}, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
