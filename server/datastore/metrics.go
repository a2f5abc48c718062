package datastore

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/telemetry"
)

// WithMetrics wraps ds so that every call is a call counter under SPIRE's
// datastore keys (datastore.registration_entry.create, datastore.node.fetch,
// ...), labelled with the gRPC code SPIRE's SQL store would have returned.
// With a nil m it returns ds.
func WithMetrics(ds DataStore, m *telemetry.Metrics) DataStore {
	if m == nil {
		return ds
	}
	return metricsStore{ds: ds, m: m}
}

type metricsStore struct {
	ds DataStore
	m  *telemetry.Metrics
}

// call starts a call counter under datastore.<key...>; the returned func
// ends it with the error, mapped to the code SPIRE's store uses for it.
func (w metricsStore) call(key ...string) func(error) {
	c := w.m.StartCall(append([]string{"datastore"}, key...)...)
	return func(err error) {
		err = codeOf(err)
		c.Done(&err)
	}
}

func codeOf(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrJoinTokenSpent):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, ErrExpired):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return err
}

func (w metricsStore) CreateEntries(ctx context.Context, entries []*types.Entry) (_ []*types.Entry, _ []error, err error) {
	done := w.call("registration_entry", "create")
	defer func() { done(err) }()
	return w.ds.CreateEntries(ctx, entries)
}

func (w metricsStore) CreateEntry(ctx context.Context, e *types.Entry) (_ *types.Entry, err error) {
	done := w.call("registration_entry", "create")
	defer func() { done(err) }()
	return w.ds.CreateEntry(ctx, e)
}

func (w metricsStore) FetchEntry(ctx context.Context, id string) (_ *types.Entry, err error) {
	done := w.call("registration_entry", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchEntry(ctx, id)
}

func (w metricsStore) ListEntries(ctx context.Context, req *ListEntriesRequest) (_ []*types.Entry, _ string, err error) {
	done := w.call("registration_entry", "list")
	defer func() { done(err) }()
	return w.ds.ListEntries(ctx, req)
}

func (w metricsStore) CountEntries(ctx context.Context, req *ListEntriesRequest) (_ int32, err error) {
	done := w.call("registration_entry", "count")
	defer func() { done(err) }()
	return w.ds.CountEntries(ctx, req)
}

func (w metricsStore) UpdateEntry(ctx context.Context, e *types.Entry, mask *types.EntryMask) (_ *types.Entry, err error) {
	done := w.call("registration_entry", "update")
	defer func() { done(err) }()
	return w.ds.UpdateEntry(ctx, e, mask)
}

func (w metricsStore) DeleteEntry(ctx context.Context, id string) (_ *types.Entry, err error) {
	done := w.call("registration_entry", "delete")
	defer func() { done(err) }()
	return w.ds.DeleteEntry(ctx, id)
}

// EntriesRevision is not a call SPIRE counts; it passes through.
func (w metricsStore) EntriesRevision(ctx context.Context) (int64, error) {
	return w.ds.EntriesRevision(ctx)
}

func (w metricsStore) PruneEntries(ctx context.Context, expiresBefore time.Time) (_ []*types.Entry, err error) {
	done := w.call("registration_entry", "prune")
	defer func() { done(err) }()
	return w.ds.PruneEntries(ctx, expiresBefore)
}

// nodeWrite counts a node write, and the join token delete that it
// carries when it spends one (SPIRE's agent deletes the token in a call
// of its own, which its dashboards count).
func (w metricsStore) nodeWrite(n *AttestedNode, op string) func(error) {
	node := w.call("node", op)
	if n == nil || n.SpendJoinToken == "" {
		return node
	}
	token := w.call("join_token", "delete")
	return func(err error) {
		node(err)
		token(err)
	}
}

func (w metricsStore) CreateAttestedNode(ctx context.Context, n *AttestedNode) (err error) {
	done := w.nodeWrite(n, "create")
	defer func() { done(err) }()
	return w.ds.CreateAttestedNode(ctx, n)
}

func (w metricsStore) FetchAttestedNode(ctx context.Context, spiffeID string) (_ *AttestedNode, err error) {
	done := w.call("node", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchAttestedNode(ctx, spiffeID)
}

func (w metricsStore) ListAttestedNodes(ctx context.Context, req *ListAttestedNodesRequest) (_ []*AttestedNode, _ string, err error) {
	done := w.call("node", "list")
	defer func() { done(err) }()
	return w.ds.ListAttestedNodes(ctx, req)
}

func (w metricsStore) CountAttestedNodes(ctx context.Context, req *ListAttestedNodesRequest) (_ int32, err error) {
	done := w.call("node", "count")
	defer func() { done(err) }()
	return w.ds.CountAttestedNodes(ctx, req)
}

func (w metricsStore) UpdateAttestedNode(ctx context.Context, n *AttestedNode, expect NodeSerials) (err error) {
	done := w.nodeWrite(n, "update")
	defer func() { done(err) }()
	return w.ds.UpdateAttestedNode(ctx, n, expect)
}

func (w metricsStore) DeleteAttestedNode(ctx context.Context, spiffeID string) (_ *AttestedNode, err error) {
	done := w.call("node", "delete")
	defer func() { done(err) }()
	return w.ds.DeleteAttestedNode(ctx, spiffeID)
}

func (w metricsStore) SetNodeSelectors(ctx context.Context, spiffeID string, selectors []*types.Selector) (err error) {
	done := w.call("node", "selectors", "set")
	defer func() { done(err) }()
	return w.ds.SetNodeSelectors(ctx, spiffeID, selectors)
}

func (w metricsStore) GetNodeSelectors(ctx context.Context, spiffeID string) (_ []*types.Selector, err error) {
	done := w.call("node", "selectors", "fetch")
	defer func() { done(err) }()
	return w.ds.GetNodeSelectors(ctx, spiffeID)
}

func (w metricsStore) CreateJoinToken(ctx context.Context, t *JoinToken) (err error) {
	done := w.call("join_token", "create")
	defer func() { done(err) }()
	return w.ds.CreateJoinToken(ctx, t)
}

func (w metricsStore) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (err error) {
	done := w.call("join_token", "prune")
	defer func() { done(err) }()
	return w.ds.PruneJoinTokens(ctx, expiredBefore)
}

func (w metricsStore) CreateBundle(ctx context.Context, b *types.Bundle) (_ *types.Bundle, err error) {
	done := w.call("bundle", "create")
	defer func() { done(err) }()
	return w.ds.CreateBundle(ctx, b)
}

func (w metricsStore) FetchBundle(ctx context.Context, trustDomain string) (_ *types.Bundle, err error) {
	done := w.call("bundle", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchBundle(ctx, trustDomain)
}

func (w metricsStore) ListBundles(ctx context.Context, p *Pagination) (_ []*types.Bundle, _ string, err error) {
	done := w.call("bundle", "list")
	defer func() { done(err) }()
	return w.ds.ListBundles(ctx, p)
}

func (w metricsStore) CountBundles(ctx context.Context) (_ int32, err error) {
	done := w.call("bundle", "count")
	defer func() { done(err) }()
	return w.ds.CountBundles(ctx)
}

func (w metricsStore) UpdateBundle(ctx context.Context, b *types.Bundle, mask *types.BundleMask) (_ *types.Bundle, err error) {
	done := w.call("bundle", "update")
	defer func() { done(err) }()
	return w.ds.UpdateBundle(ctx, b, mask)
}

func (w metricsStore) SetBundle(ctx context.Context, b *types.Bundle) (_ *types.Bundle, err error) {
	done := w.call("bundle", "set")
	defer func() { done(err) }()
	return w.ds.SetBundle(ctx, b)
}

func (w metricsStore) AppendBundle(ctx context.Context, b *types.Bundle) (_ *types.Bundle, err error) {
	done := w.call("bundle", "append")
	defer func() { done(err) }()
	return w.ds.AppendBundle(ctx, b)
}

func (w metricsStore) PruneBundle(ctx context.Context, trustDomain string, expiresBefore time.Time) (_ bool, err error) {
	done := w.call("bundle", "prune")
	defer func() { done(err) }()
	return w.ds.PruneBundle(ctx, trustDomain, expiresBefore)
}

func (w metricsStore) ModifyBundle(ctx context.Context, trustDomain string, fn func(b *types.Bundle) error) (_ *types.Bundle, err error) {
	done := w.call("bundle", "update")
	defer func() { done(err) }()
	return w.ds.ModifyBundle(ctx, trustDomain, fn)
}

func (w metricsStore) DeleteBundle(ctx context.Context, trustDomain string) (err error) {
	done := w.call("bundle", "delete")
	defer func() { done(err) }()
	return w.ds.DeleteBundle(ctx, trustDomain)
}

func (w metricsStore) CreateFederationRelationship(ctx context.Context, fr *types.FederationRelationship) (_ *types.FederationRelationship, err error) {
	done := w.call("federation_relationship", "create")
	defer func() { done(err) }()
	return w.ds.CreateFederationRelationship(ctx, fr)
}

func (w metricsStore) FetchFederationRelationship(ctx context.Context, trustDomain string) (_ *types.FederationRelationship, err error) {
	done := w.call("federation_relationship", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchFederationRelationship(ctx, trustDomain)
}

func (w metricsStore) ListFederationRelationships(ctx context.Context, p *Pagination) (_ []*types.FederationRelationship, _ string, err error) {
	done := w.call("federation_relationship", "list")
	defer func() { done(err) }()
	return w.ds.ListFederationRelationships(ctx, p)
}

func (w metricsStore) UpdateFederationRelationship(ctx context.Context, fr *types.FederationRelationship, mask *types.FederationRelationshipMask) (_ *types.FederationRelationship, err error) {
	done := w.call("federation_relationship", "update")
	defer func() { done(err) }()
	return w.ds.UpdateFederationRelationship(ctx, fr, mask)
}

func (w metricsStore) DeleteFederationRelationship(ctx context.Context, trustDomain string) (err error) {
	done := w.call("federation_relationship", "delete")
	defer func() { done(err) }()
	return w.ds.DeleteFederationRelationship(ctx, trustDomain)
}

func (w metricsStore) FetchCAJournal(ctx context.Context, name string) (_ *CAJournal, err error) {
	done := w.call("ca_journal", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchCAJournal(ctx, name)
}

// FindCAJournal is SPIRE's FetchCAJournal (by active authority ID).
func (w metricsStore) FindCAJournal(ctx context.Context, ids []string) (_ *CAJournal, err error) {
	done := w.call("ca_journal", "fetch")
	defer func() { done(err) }()
	return w.ds.FindCAJournal(ctx, ids)
}

func (w metricsStore) SetCAJournal(ctx context.Context, j *CAJournal) (err error) {
	done := w.call("ca_journal", "set")
	defer func() { done(err) }()
	return w.ds.SetCAJournal(ctx, j)
}

func (w metricsStore) PruneCAJournals(ctx context.Context, expiresBefore time.Time) (_ int, err error) {
	done := w.call("ca_journal", "prune")
	defer func() { done(err) }()
	return w.ds.PruneCAJournals(ctx, expiresBefore)
}

func (w metricsStore) FetchJoinToken(ctx context.Context, token string) (_ *JoinToken, err error) {
	done := w.call("join_token", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchJoinToken(ctx, token)
}

// Close closes the wrapped store.
// FetchEntries is SPIRE's FetchRegistrationEntries, which it counts as a
// fetch.
func (w metricsStore) FetchEntries(ctx context.Context, ids []string) (_ []*types.Entry, err error) {
	done := w.call("registration_entry", "fetch")
	defer func() { done(err) }()
	return w.ds.FetchEntries(ctx, ids)
}

func (w metricsStore) DeleteAttestedNodeIf(ctx context.Context, spiffeID string, expect NodeSerials) (_ *AttestedNode, err error) {
	done := w.call("node", "delete")
	defer func() { done(err) }()
	return w.ds.DeleteAttestedNodeIf(ctx, spiffeID, expect)
}

// Event reads are counted under SPIRE's names for them
// (datastore.registration_entry_event.list, datastore.node_event.list).
func eventKey(k EventKind) string {
	if k == NodeEvents {
		return "node_event"
	}
	return "registration_entry_event"
}

func (w metricsStore) ListEvents(ctx context.Context, kind EventKind, afterID int64, limit int, c DataConsistency) (_ []Event, err error) {
	done := w.call(eventKey(kind), "list")
	defer func() { done(err) }()
	return w.ds.ListEvents(ctx, kind, afterID, limit, c)
}

func (w metricsStore) FetchEvents(ctx context.Context, kind EventKind, ids []int64, c DataConsistency) (_ []Event, err error) {
	done := w.call(eventKey(kind), "fetch")
	defer func() { done(err) }()
	return w.ds.FetchEvents(ctx, kind, ids, c)
}

// LastEventID reads the end of the event list; SPIRE's counterpart is a
// listing, and is counted as one.
func (w metricsStore) LastEventID(ctx context.Context, kind EventKind) (_ int64, err error) {
	done := w.call(eventKey(kind), "list")
	defer func() { done(err) }()
	return w.ds.LastEventID(ctx, kind)
}

// PruneEvents prunes both tables, which SPIRE does in a call each: both
// counters count it.
func (w metricsStore) PruneEvents(ctx context.Context, olderThan time.Time) (_ int64, err error) {
	doneEntries := w.call(eventKey(EntryEvents), "prune")
	doneNodes := w.call(eventKey(NodeEvents), "prune")
	defer func() { doneEntries(err); doneNodes(err) }()
	return w.ds.PruneEvents(ctx, olderThan)
}

func (w metricsStore) Close() error { return w.ds.Close() }
