// Package datastore defines what the server persists: registration entries,
// attested nodes and their selectors, join tokens, trust bundles, federation
// relationships and the CA journal. The SQL implementation lives in the sqlstore subpackage.
//
// Entries and bundles use the SPIRE API SDK types directly: they are the wire
// contract, and keeping one shape avoids a conversion layer on every request.
package datastore

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Errors returned by every DataStore implementation. Callers test them with
// errors.Is; implementations wrap them with context.
var (
	ErrNotFound      = errors.New("datastore: not found")
	ErrAlreadyExists = errors.New("datastore: already exists")
	ErrExpired       = errors.New("datastore: expired")
	// ErrConflict reports a lost optimistic-concurrency race (for example a
	// node whose serial changed since it was read).
	ErrConflict = errors.New("datastore: conflict")
	// ErrJoinTokenSpent refuses a node write whose SpendJoinToken is no
	// longer stored: another attestation spent it first (or it was never
	// there). It is not ErrNotFound, which a node write returns for an
	// absent node.
	ErrJoinTokenSpent = errors.New("datastore: join token does not exist or has already been used")
)

// MatchBehavior says how a selector filter compares with an entry's selectors.
// The values mirror types.SelectorMatch_MatchBehavior.
type MatchBehavior int

const (
	// MatchExact: the entry's selector set equals the filter's.
	MatchExact MatchBehavior = iota
	// MatchSubset: every selector of the entry is in the filter.
	MatchSubset
	// MatchSuperset: every selector of the filter is in the entry.
	MatchSuperset
	// MatchAny: the entry has at least one selector of the filter.
	MatchAny
)

// SelectorFilter filters by selectors.
type SelectorFilter struct {
	Selectors []*types.Selector
	Match     MatchBehavior
}

// FederatesWithFilter filters entries by the trust domains they federate with
// (trust domain names, without the spiffe:// scheme).
type FederatesWithFilter struct {
	TrustDomains []string
	Match        MatchBehavior
}

// Pagination asks for one page. An empty Token starts at the beginning; a
// Size of zero means no paging. The store returns the next token, empty when
// there are no more results.
type Pagination struct {
	Size  int32
	Token string
}

// DataConsistency says whether a read must see every committed write
// (SPIRE's names).
type DataConsistency int32

const (
	// RequireCurrent reads from the primary database.
	RequireCurrent DataConsistency = iota
	// TolerateStale lets the read go to the read-only replica
	// (ro_connection_string), which may lag the primary.
	TolerateStale
)

// ListEntriesRequest filters entries; every set field must match.
type ListEntriesRequest struct {
	BySPIFFEID      string // full SPIFFE ID, "" for any
	ByParentID      string // full SPIFFE ID, "" for any
	BySelectors     *SelectorFilter
	ByFederatesWith *FederatesWithFilter
	ByHint          *string
	ByDownstream    *bool
	Pagination      *Pagination
	DataConsistency DataConsistency
}

// AttestedNode is an agent the server has attested.
//
// Banned is derived, as in SPIRE: a node with both serial numbers empty is
// banned. Ban therefore clears the serials rather than setting a flag.
type AttestedNode struct {
	SPIFFEID        string
	AttestationType string
	CertSerial      string
	CertNotAfter    int64 // unix seconds
	NewCertSerial   string
	NewCertNotAfter int64
	CanReattest     bool
	// Selectors, when non-nil, are written with the node in the same
	// transaction (CreateAttestedNode, UpdateAttestedNode) and filled in on
	// fetch.
	Selectors []*types.Selector
	// SpendJoinToken, on CreateAttestedNode and UpdateAttestedNode, is a
	// join token that the write deletes in its own transaction: the node
	// is recorded only with the token spent, and the token is spent only
	// with the node recorded, in one commit (one sync of the log, where
	// a delete then a write took two). Of concurrent writes naming the
	// same token one succeeds; the others get ErrJoinTokenSpent and write
	// nothing. The caller checks the token's expiry before. Never set on
	// what a fetch returns.
	SpendJoinToken string
}

// Banned reports whether the node is banned.
func (n *AttestedNode) Banned() bool { return n.CertSerial == "" && n.NewCertSerial == "" }

// CAJournal is one server's record of its CA slots (server/ca encodes
// Data). Servers sharing a database each keep their own, found again by
// the authority ID (subject key ID, hex) of the X.509 CA that was active
// when it was last written, as SPIRE's ca_journal rows are.
type CAJournal struct {
	// Name identifies the row; it never changes once written.
	Name string
	// ActiveX509AuthorityID is the active X.509 CA's subject key ID.
	ActiveX509AuthorityID string
	// ExpiresAt is when the last of the journal's authorities expires
	// (Unix seconds); 0 when unknown.
	ExpiresAt int64
	Data      []byte
}

// NodeSerials are a node's two serial numbers as a caller read them: what
// UpdateAttestedNode expects to find still stored. They serve as the row's
// version because every change of a node's state (attestation, renewal,
// activation of a renewed SVID, ban) changes them and none brings back an
// earlier pair: serials are random and never reissued, and a banned node
// ("", "") is only ever deleted.
type NodeSerials struct {
	CertSerial    string
	NewCertSerial string
}

// Serials returns the node's serials, to make a write of it conditional on
// what was read.
func (n *AttestedNode) Serials() NodeSerials {
	return NodeSerials{CertSerial: n.CertSerial, NewCertSerial: n.NewCertSerial}
}

// ListAttestedNodesRequest filters nodes; every set field must match.
type ListAttestedNodesRequest struct {
	ByAttestationType string
	ByBanned          *bool
	ByCanReattest     *bool
	BySelectors       *SelectorFilter
	ExpiresBefore     int64 // unix seconds; 0 for any
	Pagination        *Pagination
	DataConsistency   DataConsistency
}

// EventKind names a change table: every write of a registration entry or
// an attested node appends an event to its table in the write's own
// transaction (SPIRE's registered_entries_events and
// attested_node_entries_events), so that servers sharing the database
// learn what changed by reading the events after the last one they saw.
type EventKind int

const (
	// EntryEvents are registration entry changes; an event's Key is the
	// entry ID.
	EntryEvents EventKind = iota
	// NodeEvents are attested node changes (its row or its selectors); an
	// event's Key is the node's SPIFFE ID.
	NodeEvents
)

// String is the kind's table name.
func (k EventKind) String() string {
	if k == NodeEvents {
		return "attested_node_entries_events"
	}
	return "registered_entries_events"
}

// Event says that the entry or node Key changed; the reader fetches its
// current state. IDs grow with every event, but transactions commit in
// any order, so an ID may show up after a greater one has (a gap that
// the reader checks again for a while).
type Event struct {
	ID  int64
	Key string
}

// JoinToken is a single-use secret that attests one agent.
type JoinToken struct {
	Token     string
	ExpiresAt time.Time
}

// DataStore is the server's persistence. Every method that writes more than
// one row does it in one transaction: a failure leaves nothing half-written.
type DataStore interface {
	// CreateEntry stores a new entry. It assigns an ID when e.Id is empty,
	// sets CreatedAt and a RevisionNumber of 0, and returns the stored entry.
	// An entry with the same SPIFFE ID, parent ID and selector set already
	// present yields ErrAlreadyExists, as does a duplicate ID.
	CreateEntry(ctx context.Context, e *types.Entry) (*types.Entry, error)
	// CreateEntries is CreateEntry for a batch in one transaction: either
	// every entry that could be created is, or (err != nil) none is.
	// created[i] is the stored entries[i], or nil with errs[i] saying why
	// that one alone was refused (ErrAlreadyExists, an invalid ID).
	CreateEntries(ctx context.Context, entries []*types.Entry) (created []*types.Entry, errs []error, err error)
	FetchEntry(ctx context.Context, id string) (*types.Entry, error)
	ListEntries(ctx context.Context, req *ListEntriesRequest) (entries []*types.Entry, nextToken string, err error)
	CountEntries(ctx context.Context, req *ListEntriesRequest) (int32, error)
	// UpdateEntry changes the fields that mask selects (all when mask is nil),
	// bumps RevisionNumber and returns the stored entry. A change that would
	// duplicate another entry yields ErrAlreadyExists.
	UpdateEntry(ctx context.Context, e *types.Entry, mask *types.EntryMask) (*types.Entry, error)
	DeleteEntry(ctx context.Context, id string) (*types.Entry, error)
	// PruneEntries deletes the entries whose ExpiresAt is set and before
	// expiresBefore, a few hundred per transaction, and returns them
	// (those deleted before a failure too, with the error).
	PruneEntries(ctx context.Context, expiresBefore time.Time) ([]*types.Entry, error)
	// FetchEntries returns the entries with these IDs that exist, in ID
	// order; an absent ID is skipped (the entry was deleted).
	FetchEntries(ctx context.Context, ids []string) ([]*types.Entry, error)
	// EntriesRevision changes whenever any entry is created, updated or
	// deleted, so caches can tell cheaply whether to reload.
	EntriesRevision(ctx context.Context) (int64, error)

	CreateAttestedNode(ctx context.Context, n *AttestedNode) error
	FetchAttestedNode(ctx context.Context, spiffeID string) (*AttestedNode, error)
	ListAttestedNodes(ctx context.Context, req *ListAttestedNodesRequest) (nodes []*AttestedNode, nextToken string, err error)
	CountAttestedNodes(ctx context.Context, req *ListAttestedNodesRequest) (int32, error)
	// UpdateAttestedNode replaces the node's columns (and its selectors when
	// n.Selectors is non-nil) if its stored serials are still expect, the
	// ones the caller read before deciding: a compare-and-swap, so that of
	// two servers (or calls) writing the same node from the same read one
	// wins and the other gets ErrConflict, with the winner's row left as
	// it wrote it. ErrNotFound when the node is absent.
	UpdateAttestedNode(ctx context.Context, n *AttestedNode, expect NodeSerials) error
	// DeleteAttestedNode removes the node and its selectors.
	DeleteAttestedNode(ctx context.Context, spiffeID string) (*AttestedNode, error)
	// DeleteAttestedNodeIf removes the node and its selectors if its
	// stored serials are still expect, and returns what it removed:
	// ErrConflict when they changed (a pruner must not delete a node that
	// re-attested through another server since it was read), ErrNotFound
	// when the node is absent.
	DeleteAttestedNodeIf(ctx context.Context, spiffeID string, expect NodeSerials) (*AttestedNode, error)
	// SetNodeSelectors replaces a node's selectors; it does not require the
	// node to exist (SPIRE stores selectors keyed by SPIFFE ID).
	SetNodeSelectors(ctx context.Context, spiffeID string, selectors []*types.Selector) error
	GetNodeSelectors(ctx context.Context, spiffeID string) ([]*types.Selector, error)

	CreateJoinToken(ctx context.Context, t *JoinToken) error
	// FetchJoinToken returns the token, or ErrNotFound. It reads only: an
	// attestation spends its token in the write that records the node
	// (AttestedNode.SpendJoinToken).
	FetchJoinToken(ctx context.Context, token string) (*JoinToken, error)
	PruneJoinTokens(ctx context.Context, expiredBefore time.Time) error

	// CreateBundle stores a new bundle; ErrAlreadyExists if one exists for
	// the trust domain.
	CreateBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error)
	FetchBundle(ctx context.Context, trustDomain string) (*types.Bundle, error)
	ListBundles(ctx context.Context, p *Pagination) (bundles []*types.Bundle, nextToken string, err error)
	// CountBundles counts every bundle, the server's own included.
	CountBundles(ctx context.Context) (int32, error)
	// UpdateBundle replaces the fields mask selects (all when nil).
	UpdateBundle(ctx context.Context, b *types.Bundle, mask *types.BundleMask) (*types.Bundle, error)
	// SetBundle creates or replaces the bundle.
	SetBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error)
	// AppendBundle adds authorities not already present (X.509 by DER bytes,
	// JWT by key ID), creating the bundle if absent, and bumps the sequence
	// number when anything changed. Read and write happen in one transaction.
	AppendBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error)
	// PruneBundle removes X.509 authorities whose NotAfter and JWT keys whose
	// ExpiresAt are before expiresBefore, never the last X.509 authority, and
	// reports whether anything changed.
	PruneBundle(ctx context.Context, trustDomain string, expiresBefore time.Time) (bool, error)
	// ModifyBundle reads the trust domain's bundle, lets fn change it and
	// stores the result with the sequence number bumped, in one
	// transaction, so a change computed from the bundle (tainting or
	// revoking an authority) cannot lose a concurrent append. An error
	// from fn leaves the bundle untouched and is returned wrapped;
	// ErrNotFound when there is no bundle.
	ModifyBundle(ctx context.Context, trustDomain string, fn func(b *types.Bundle) error) (*types.Bundle, error)
	DeleteBundle(ctx context.Context, trustDomain string) error

	// CreateFederationRelationship stores a relationship with a foreign
	// trust domain; ErrAlreadyExists if one exists for it. A given
	// TrustDomainBundle replaces that trust domain's bundle (SetBundle) in
	// the same transaction, as in SPIRE. The trust domain is stored by
	// name, without "spiffe://".
	CreateFederationRelationship(ctx context.Context, fr *types.FederationRelationship) (*types.FederationRelationship, error)
	// FetchFederationRelationship returns the relationship with its
	// TrustDomainBundle filled from the bundles (nil when there is none
	// yet), or ErrNotFound.
	FetchFederationRelationship(ctx context.Context, trustDomain string) (*types.FederationRelationship, error)
	// ListFederationRelationships lists relationships in trust domain
	// order, each with its bundle as FetchFederationRelationship.
	ListFederationRelationships(ctx context.Context, p *Pagination) (relationships []*types.FederationRelationship, nextToken string, err error)
	// UpdateFederationRelationship changes the fields mask selects (all
	// when nil) and returns the stored relationship; ErrNotFound when
	// absent. With TrustDomainBundle selected and given, the bundle is
	// replaced in the same transaction.
	UpdateFederationRelationship(ctx context.Context, fr *types.FederationRelationship, mask *types.FederationRelationshipMask) (*types.FederationRelationship, error)
	// DeleteFederationRelationship removes the relationship but keeps the
	// trust domain's bundle, as SPIRE does; ErrNotFound when absent.
	DeleteFederationRelationship(ctx context.Context, trustDomain string) error

	// ListEvents returns up to limit events of kind with an ID greater
	// than afterID, in ID order (limit <= 0: all of them). With
	// TolerateStale it reads the replica, which shows a prefix of the
	// primary's commits: a lagging replica delays events, it never shows
	// one that the primary has not committed.
	ListEvents(ctx context.Context, kind EventKind, afterID int64, limit int, c DataConsistency) ([]Event, error)
	// FetchEvents returns those of the events with these IDs that exist,
	// in ID order: how a reader finds an event whose transaction
	// committed after a later one's. c is as for ListEvents.
	FetchEvents(ctx context.Context, kind EventKind, ids []int64, c DataConsistency) ([]Event, error)
	// LastEventID is the greatest event ID of kind, 0 when there is none.
	LastEventID(ctx context.Context, kind EventKind) (int64, error)
	// PruneEvents deletes the events of every kind written before
	// olderThan, except the newest of each kind (whose ID keeps the next
	// ones growing on engines that recount it from the table), and
	// returns how many it deleted. Servers sharing the database may all
	// call it: a second call finds nothing left to delete.
	PruneEvents(ctx context.Context, olderThan time.Time) (int64, error)

	// FetchCAJournal returns the CA journal stored under name, or
	// ErrNotFound.
	FetchCAJournal(ctx context.Context, name string) (*CAJournal, error)
	// FindCAJournal returns the journal whose active X.509 authority is
	// one of ids, or ErrNotFound: how a server finds its own among those
	// of every server sharing the database.
	FindCAJournal(ctx context.Context, activeX509AuthorityIDs []string) (*CAJournal, error)
	// SetCAJournal stores j under j.Name, replacing what was there.
	SetCAJournal(ctx context.Context, j *CAJournal) error
	// PruneCAJournals deletes the journals whose authorities all expired
	// before expiresBefore (servers gone for good) and returns how many.
	// A journal without an expiry (written before it was recorded) stays.
	PruneCAJournals(ctx context.Context, expiresBefore time.Time) (int, error)

	Close() error
}
