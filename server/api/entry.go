package api

import (
	"context"
	"errors"
	"io"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// EntryService implements entry/v1.
type EntryService struct {
	entryv1.UnimplementedEntryServer
	api *API
}

func (a *API) listEntriesRequest(f *entryv1.ListEntriesRequest_Filter) (*datastore.ListEntriesRequest, error) {
	req := &datastore.ListEntriesRequest{}
	if f == nil {
		return req, nil
	}
	if f.BySpiffeId != nil {
		id, err := a.idFromProto("invalid by_spiffe_id filter", f.BySpiffeId)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		req.BySPIFFEID = id.String()
	}
	if f.ByParentId != nil {
		id, err := a.idFromProto("invalid by_parent_id filter", f.ByParentId)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		req.ByParentID = id.String()
	}
	if f.BySelectors != nil {
		for _, s := range f.BySelectors.Selectors {
			if err := validateSelector(s); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "invalid by_selectors filter: %v", err)
			}
		}
		if len(f.BySelectors.Selectors) == 0 {
			return nil, status.Error(codes.InvalidArgument, "invalid by_selectors filter: no selectors")
		}
		req.BySelectors = &datastore.SelectorFilter{Selectors: f.BySelectors.Selectors, Match: datastore.MatchBehavior(f.BySelectors.Match)}
	}
	if f.ByFederatesWith != nil {
		req.ByFederatesWith = &datastore.FederatesWithFilter{TrustDomains: f.ByFederatesWith.TrustDomains, Match: datastore.MatchBehavior(f.ByFederatesWith.Match)}
	}
	if f.ByHint != nil {
		h := f.ByHint.Value
		req.ByHint = &h
	}
	// As in SPIRE, by_downstream=true keeps only downstream entries and
	// false filters nothing: SPIRE's CLI always sends the filter, false
	// unless -downstream is given, and still lists downstream entries.
	if f.ByDownstream != nil && f.ByDownstream.Value {
		d := true
		req.ByDownstream = &d
	}
	return req, nil
}

// CountEntries implements entry/v1.
func (s *EntryService) CountEntries(ctx context.Context, req *entryv1.CountEntriesRequest) (*entryv1.CountEntriesResponse, error) {
	var f *entryv1.ListEntriesRequest_Filter
	if req.Filter != nil {
		f = &entryv1.ListEntriesRequest_Filter{
			BySpiffeId: req.Filter.BySpiffeId, ByParentId: req.Filter.ByParentId, BySelectors: req.Filter.BySelectors,
			ByFederatesWith: req.Filter.ByFederatesWith, ByHint: req.Filter.ByHint, ByDownstream: req.Filter.ByDownstream,
		}
	}
	lr, err := s.api.listEntriesRequest(f)
	if err != nil {
		return nil, err
	}
	n, err := s.api.cfg.DataStore.CountEntries(ctx, lr)
	if err != nil {
		return nil, dsError("count entries", err)
	}
	return &entryv1.CountEntriesResponse{Count: n}, nil
}

// ListEntries implements entry/v1.
func (s *EntryService) ListEntries(ctx context.Context, req *entryv1.ListEntriesRequest) (*entryv1.ListEntriesResponse, error) {
	lr, err := s.api.listEntriesRequest(req.Filter)
	if err != nil {
		return nil, err
	}
	if req.PageSize < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	if req.PageSize > 0 || req.PageToken != "" {
		lr.Pagination = &datastore.Pagination{Size: req.PageSize, Token: req.PageToken}
	}
	entries, next, err := s.api.cfg.DataStore.ListEntries(ctx, lr)
	if err != nil {
		return nil, dsError("list entries", err)
	}
	resp := &entryv1.ListEntriesResponse{NextPageToken: next}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, applyEntryMask(e, req.OutputMask))
	}
	return resp, nil
}

// GetEntry implements entry/v1.
func (s *EntryService) GetEntry(ctx context.Context, req *entryv1.GetEntryRequest) (*types.Entry, error) {
	if req.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "missing entry ID")
	}
	e, err := s.api.cfg.DataStore.FetchEntry(ctx, req.Id)
	if err != nil {
		return nil, entryError(req.Id, err)
	}
	return applyEntryMask(e, req.OutputMask), nil
}

// BatchCreateEntry implements entry/v1. Each entry is its own transaction:
// one bad entry does not stop the others, and leaves nothing behind.
func (s *EntryService) BatchCreateEntry(ctx context.Context, req *entryv1.BatchCreateEntryRequest) (*entryv1.BatchCreateEntryResponse, error) {
	if len(req.Entries) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many entries: %d, at most %d per request", len(req.Entries), MaxBatch)
	}
	// Results in request order: refusals of validation in place, the
	// valid entries created in one transaction.
	results := make([]*entryv1.BatchCreateEntryResponse_Result, len(req.Entries))
	var valid []*types.Entry
	var at []int
	for i, in := range req.Entries {
		e, err := s.api.validateEntry(in, nil)
		if err != nil {
			results[i] = &entryv1.BatchCreateEntryResponse_Result{
				Status: toStatus(status.Errorf(codes.InvalidArgument, "failed to convert entry: %v", err)), Entry: in,
			}
			continue
		}
		valid = append(valid, e)
		at = append(at, i)
	}
	if len(valid) > 0 {
		created, errs, err := s.api.cfg.DataStore.CreateEntries(ctx, valid)
		s.api.entries.invalidate()
		for k, i := range at {
			switch {
			case err != nil:
				results[i] = &entryv1.BatchCreateEntryResponse_Result{Status: toStatus(dsError("create entry", err)), Entry: req.Entries[i]}
			case errors.Is(errs[k], datastore.ErrAlreadyExists):
				existing := s.findSimilar(ctx, valid[k])
				results[i] = &entryv1.BatchCreateEntryResponse_Result{
					Status: toStatus(status.Error(codes.AlreadyExists, "similar entry already exists")), Entry: applyEntryMask(existing, req.OutputMask),
				}
			case errs[k] != nil:
				results[i] = &entryv1.BatchCreateEntryResponse_Result{Status: toStatus(dsError("create entry", errs[k])), Entry: req.Entries[i]}
			default:
				results[i] = &entryv1.BatchCreateEntryResponse_Result{Status: toStatus(nil), Entry: applyEntryMask(created[k], req.OutputMask)}
			}
		}
	}
	return &entryv1.BatchCreateEntryResponse{Results: results}, nil
}

// findSimilar returns the entry with the same SPIFFE ID, parent and
// selectors, as SPIRE reports it on AlreadyExists; e itself if none is found
// (the clash was on the ID).
func (s *EntryService) findSimilar(ctx context.Context, e *types.Entry) *types.Entry {
	entries, _, err := s.api.cfg.DataStore.ListEntries(ctx, &datastore.ListEntriesRequest{
		BySPIFFEID:  protoIDString(e.SpiffeId),
		ByParentID:  protoIDString(e.ParentId),
		BySelectors: &datastore.SelectorFilter{Selectors: e.Selectors, Match: datastore.MatchExact},
	})
	if err == nil && len(entries) > 0 {
		return entries[0]
	}
	return e
}

// BatchUpdateEntry implements entry/v1.
func (s *EntryService) BatchUpdateEntry(ctx context.Context, req *entryv1.BatchUpdateEntryRequest) (*entryv1.BatchUpdateEntryResponse, error) {
	if len(req.Entries) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many entries: %d, at most %d per request", len(req.Entries), MaxBatch)
	}
	resp := &entryv1.BatchUpdateEntryResponse{}
	for _, in := range req.Entries {
		res := &entryv1.BatchUpdateEntryResponse_Result{Entry: in}
		resp.Results = append(resp.Results, res)
		if in.GetId() == "" {
			res.Status = toStatus(status.Error(codes.InvalidArgument, "failed to update entry: missing entry ID"))
			continue
		}
		e, err := s.api.validateEntry(in, req.InputMask)
		if err != nil {
			res.Status = toStatus(status.Errorf(codes.InvalidArgument, "failed to convert entry: %v", err))
			continue
		}
		updated, err := s.api.cfg.DataStore.UpdateEntry(ctx, e, req.InputMask)
		s.api.entries.invalidate()
		if err != nil {
			res.Status = toStatus(dsError("update entry "+in.Id, err))
			continue
		}
		res.Status, res.Entry = toStatus(nil), applyEntryMask(updated, req.OutputMask)
	}
	return resp, nil
}

// entryError is dsError for one entry, with SPIRE's exact NotFound
// message: its CLI prints the message after the entry's ID.
func entryError(id string, err error) error {
	if errors.Is(err, datastore.ErrNotFound) {
		return status.Error(codes.NotFound, "entry not found")
	}
	return dsError("entry "+id, err)
}

// BatchDeleteEntry implements entry/v1.
func (s *EntryService) BatchDeleteEntry(ctx context.Context, req *entryv1.BatchDeleteEntryRequest) (*entryv1.BatchDeleteEntryResponse, error) {
	if len(req.Ids) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many IDs: %d, at most %d per request", len(req.Ids), MaxBatch)
	}
	resp := &entryv1.BatchDeleteEntryResponse{}
	for _, id := range req.Ids {
		var err error
		if id == "" {
			err = status.Error(codes.InvalidArgument, "missing entry ID")
		} else if _, derr := s.deleteEntry(ctx, id); derr != nil {
			err = entryError(id, derr)
		}
		resp.Results = append(resp.Results, &entryv1.BatchDeleteEntryResponse_Result{Status: toStatus(err), Id: id})
	}
	return resp, nil
}

// GetAuthorizedEntries implements entry/v1.
func (s *EntryService) GetAuthorizedEntries(ctx context.Context, req *entryv1.GetAuthorizedEntriesRequest) (*entryv1.GetAuthorizedEntriesResponse, error) {
	c, err := callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	snap, m, err := s.api.syncedEntries(ctx, c)
	if err != nil {
		return nil, dsError("authorized entries", err)
	}
	resp := &entryv1.GetAuthorizedEntriesResponse{}
	for _, i := range m.entries {
		resp.Entries = append(resp.Entries, applyEntryMask(snap.entry(i), req.OutputMask))
	}
	return resp, nil
}

// SyncAuthorizedEntries implements entry/v1's paged sync: small sets are
// sent whole; larger ones as revisions first, then the entries the agent
// asks for by ID. Entries go out as the snapshot holds them, encoded
// (rawMessage), with the mask applied to their encoding.
func (s *EntryService) SyncAuthorizedEntries(stream entryv1.Entry_SyncAuthorizedEntriesServer) error {
	ctx := stream.Context()
	c, err := callerAgent(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	keep := maskFields(first.OutputMask)
	snap, m, err := s.api.syncedEntries(ctx, c)
	if err != nil {
		return dsError("authorized entries", err)
	}
	entries := m.entries
	if len(entries) < syncPageSize {
		return sendEntryPages(stream, snap, entries, keep)
	}
	for i := 0; i < len(entries); i += syncPageSize {
		page := entries[i:min(i+syncPageSize, len(entries))]
		resp := &entryv1.SyncAuthorizedEntriesResponse{More: i+syncPageSize < len(entries)}
		for _, k := range page {
			e := &snap.ents[k]
			resp.EntryRevisions = append(resp.EntryRevisions, &entryv1.EntryRevision{Id: snap.id(k), RevisionNumber: e.revision, CreatedAt: e.createdAt})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(req.Ids) > len(entries) {
			return status.Errorf(codes.InvalidArgument, "asked for %d entries, only %d are authorized", len(req.Ids), len(entries))
		}
		want := make([]int32, 0, len(req.Ids))
		for _, id := range req.Ids {
			// IDs the agent is not authorized for are skipped, not
			// disclosed.
			if k, ok := snap.find(id); ok && m.contains(k) {
				want = append(want, k)
			}
		}
		if err := sendEntryPages(stream, snap, want, keep); err != nil {
			return err
		}
	}
}

func sendEntryPages(stream entryv1.Entry_SyncAuthorizedEntriesServer, snap *entrySnapshot, entries []int32, keep keptFields) error {
	if len(entries) == 0 {
		return stream.SendMsg(rawMessage(nil))
	}
	for i := 0; i < len(entries); i += syncPageSize {
		page := entries[i:min(i+syncPageSize, len(entries))]
		// Sized for the whole entries, which a masked one never exceeds:
		// one buffer a response.
		size := 2
		for _, k := range page {
			size += int(snap.ents[k].wireLen) + 1 + protowire.SizeVarint(uint64(snap.ents[k].wireLen))
		}
		b := make([]byte, 0, size)
		for _, k := range page {
			b = snap.appendEntry(b, entrySyncEntries, k, keep)
		}
		if i+syncPageSize < len(entries) {
			b = protowire.AppendTag(b, entrySyncMore, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
		if err := stream.SendMsg(rawMessage(b)); err != nil {
			return err
		}
	}
	return nil
}

// deleteEntry deletes through the datastore and lets the entry cache know.
func (s *EntryService) deleteEntry(ctx context.Context, id string) (*types.Entry, error) {
	e, err := s.api.cfg.DataStore.DeleteEntry(ctx, id)
	s.api.entries.invalidate()
	return e, err
}
