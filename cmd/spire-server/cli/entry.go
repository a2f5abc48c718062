package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// listEntriesPageSize matches SPIRE's CLI page size.
const listEntriesPageSize = 500

// serverIDPath is the path of the server's own SPIFFE ID, the parent of
// node entries (-node).
const serverIDPath = "/spire/server"

// entryFields are the flags shared by "entry create" and "entry update".
type entryFields struct {
	data          string
	entryID       string
	parentID      string
	spiffeID      string
	hint          string
	ttl           int
	x509SVIDTTL   int
	jwtSVIDTTL    int
	selectors     stringsFlag
	federatesWith stringsFlag
	dnsNames      stringsFlag
	admin         bool
	downstream    bool
	node          bool
	storeSVID     bool
	entryExpiry   int64
}

func (f *entryFields) appendFlags(fs *flag.FlagSet, create bool) {
	if create {
		fs.StringVar(&f.entryID, "entryID", "", "A custom ID for this registration entry (optional). If not set, a new entry ID will be generated")
		fs.BoolVar(&f.node, "node", false, "If set, this entry will be applied to matching nodes rather than workloads")
	} else {
		fs.StringVar(&f.entryID, "entryID", "", "The Registration Entry ID of the record to update")
	}
	fs.StringVar(&f.parentID, "parentID", "", "The SPIFFE ID of this record's parent")
	fs.StringVar(&f.spiffeID, "spiffeID", "", "The SPIFFE ID that this record represents")
	fs.IntVar(&f.ttl, "ttl", 0, "The lifetime, in seconds, for SVIDs issued based on this registration entry. This flag is deprecated in favor of x509SVIDTTL and jwtSVIDTTL and will be removed in a future version")
	fs.IntVar(&f.x509SVIDTTL, "x509SVIDTTL", 0, "The lifetime, in seconds, for x509-SVIDs issued based on this registration entry. Overrides ttl flag")
	fs.IntVar(&f.jwtSVIDTTL, "jwtSVIDTTL", 0, "The lifetime, in seconds, for JWT-SVIDs issued based on this registration entry. Overrides ttl flag")
	fs.StringVar(&f.data, "data", "", "Path to a file containing registration JSON (optional). If set to '-', read the JSON from stdin.")
	fs.Var(&f.selectors, "selector", "A colon-delimited type:value selector. Can be used more than once")
	fs.Var(&f.federatesWith, "federatesWith", "SPIFFE ID of a trust domain to federate with. Can be used more than once")
	fs.BoolVar(&f.admin, "admin", false, "If set, the SPIFFE ID in this entry will be granted access to the SPIRE Server's management APIs")
	fs.BoolVar(&f.storeSVID, "storeSVID", false, "A boolean value that, when set, indicates that the resulting issued SVID from this entry must be stored through an SVIDStore plugin")
	fs.BoolVar(&f.downstream, "downstream", false, "A boolean value that, when set, indicates that the entry describes a downstream SPIRE server")
	fs.Int64Var(&f.entryExpiry, "entryExpiry", 0, "An expiry, from epoch in seconds, for the resulting registration entry to be pruned")
	fs.Var(&f.dnsNames, "dns", "A DNS name that will be included in SVIDs issued based on this entry, where appropriate. Can be used more than once")
	fs.StringVar(&f.hint, "hint", "", "The entry hint, used to disambiguate entries with the same SPIFFE ID")
}

// validate checks the flags in SPIRE's order and wording; the flag to set is
// named in parentheses.
func (f *entryFields) validate(create bool) error {
	if !create && f.entryID == "" {
		return errors.New("entry ID is required (set -entryID)")
	}
	if len(f.selectors) < 1 {
		return errors.New("at least one selector is required (set -selector type:value)")
	}
	if f.node && len(f.federatesWith) > 0 {
		return errors.New("node entries can not federate")
	}
	if f.parentID == "" {
		if create && !f.node {
			return errors.New("a parent ID is required if the node flag is not set (set -parentID or -node)")
		}
		if !create {
			return errors.New("a parent ID is required (set -parentID)")
		}
	}
	if f.spiffeID == "" {
		return errors.New("a SPIFFE ID is required (set -spiffeID)")
	}
	if f.ttl < 0 {
		return errors.New("a positive TTL is required")
	}
	if f.x509SVIDTTL < 0 {
		return errors.New("a positive x509-SVID TTL is required")
	}
	if f.jwtSVIDTTL < 0 {
		return errors.New("a positive JWT-SVID TTL is required")
	}
	if f.ttl > 0 && (f.x509SVIDTTL > 0 || f.jwtSVIDTTL > 0) {
		return errors.New("use x509SVIDTTL and jwtSVIDTTL flags or the deprecated ttl flag")
	}
	return nil
}

// buildEntry turns validated flags into the entry to send.
func (f *entryFields) buildEntry() (*types.Entry, error) {
	spiffeID, err := idToProto(f.spiffeID)
	if err != nil {
		return nil, fmt.Errorf("invalid -spiffeID %q: %w", f.spiffeID, err)
	}
	var parentID *types.SPIFFEID
	if f.node {
		parentID = &types.SPIFFEID{TrustDomain: spiffeID.TrustDomain, Path: serverIDPath}
	} else {
		parentID, err = idToProto(f.parentID)
		if err != nil {
			return nil, fmt.Errorf("invalid -parentID %q: %w", f.parentID, err)
		}
	}
	selectors, err := parseSelectors(f.selectors)
	if err != nil {
		return nil, err
	}
	e := &types.Entry{
		Id:            f.entryID,
		SpiffeId:      spiffeID,
		ParentId:      parentID,
		Selectors:     selectors,
		FederatesWith: f.federatesWith,
		Admin:         f.admin,
		Downstream:    f.downstream,
		ExpiresAt:     f.entryExpiry,
		DnsNames:      f.dnsNames,
		StoreSvid:     f.storeSVID,
		X509SvidTtl:   int32(f.x509SVIDTTL),
		JwtSvidTtl:    int32(f.jwtSVIDTTL),
		Hint:          f.hint,
	}
	// The deprecated -ttl only ever set the X509-SVID lifetime; JWT-SVIDs
	// kept their own default (SPIRE issue 2700).
	if e.X509SvidTtl == 0 {
		e.X509SvidTtl = int32(f.ttl)
	}
	return e, nil
}

// entries returns the entries to send: from -data when given (other flags
// are then ignored, as in SPIRE), else from the flags.
func (f *entryFields) entries(stdin io.Reader, create bool) ([]*types.Entry, error) {
	if f.data != "" {
		return readEntryData(stdin, f.data)
	}
	if err := f.validate(create); err != nil {
		return nil, err
	}
	e, err := f.buildEntry()
	if err != nil {
		return nil, err
	}
	return []*types.Entry{e}, nil
}

// readEntryData reads -data from a file, or from stdin when path is "-",
// at most maxEntryDataSize bytes either way: a file can be as endless as
// stdin (/dev/zero, a FIFO).
func readEntryData(stdin io.Reader, path string) ([]*types.Entry, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = readLimited(stdin, "stdin", maxEntryDataSize)
	} else {
		data, err = readFileLimited(path, maxEntryDataSize)
	}
	if err != nil {
		return nil, fmt.Errorf("unable to read entry data: %w", err)
	}
	return ParseEntryJSON(data)
}

// entryCreateCommand is "entry create".
type entryCreateCommand struct {
	fields entryFields
	out    outputFormat
}

func (*entryCreateCommand) synopsis() string { return "Creates registration entries" }

func (c *entryCreateCommand) appendFlags(fs *flag.FlagSet) {
	c.fields.appendFlags(fs, true)
	addOutputFlag(fs, &c.out)
}

func (c *entryCreateCommand) buildRequest(stdin io.Reader) (*entryv1.BatchCreateEntryRequest, error) {
	entries, err := c.fields.entries(stdin, true)
	if err != nil {
		return nil, err
	}
	return &entryv1.BatchCreateEntryRequest{Entries: entries}, nil
}

func (c *entryCreateCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest(e.stdin)
	if err != nil {
		return err
	}
	resp, err := cl.entry().BatchCreateEntry(ctx, req)
	if err != nil {
		return err
	}
	// The API omits the entry from failed results; show what was sent.
	for i, r := range resp.Results {
		if r.GetStatus().GetCode() != int32(codes.OK) && i < len(req.Entries) {
			r.Entry = req.Entries[i]
		}
	}
	return printCreateResults(e, c.out, resp)
}

func printCreateResults(e *env, out outputFormat, resp *entryv1.BatchCreateEntryResponse) error {
	return printEntryResults(e, out, resp, resp.Results, "create")
}

// entryResult is a result of BatchCreateEntry or BatchUpdateEntry.
type entryResult interface {
	GetStatus() *types.Status
	GetEntry() *types.Entry
}

// printEntryResults prints a batch create or update answer as SPIRE's CLI
// does: the entries that succeeded on stdout, each failure (verb names the
// operation) on stderr, and an error when any failed.
func printEntryResults[R entryResult](e *env, out outputFormat, resp proto.Message, results []R, verb string) error {
	if out == outputJSON {
		// Like SPIRE's CLI: the JSON carries each result's status, and
		// the command succeeds.
		return printProtoJSON(e.stdout, resp)
	}
	var failed int
	for _, r := range results {
		if r.GetStatus().GetCode() == int32(codes.OK) {
			printEntry(e.stdout, r.GetEntry())
		}
	}
	for _, r := range results {
		if st := r.GetStatus(); st.GetCode() != int32(codes.OK) {
			failed++
			e.errPrintf("Failed to %s the following entry (code: %s, msg: %q):\n", verb, codes.Code(st.GetCode()), st.GetMessage())
			printEntry(e.stderr, r.GetEntry())
		}
	}
	if failed > 0 {
		return fmt.Errorf("failed to %s one or more entries", verb)
	}
	return nil
}

// entryUpdateCommand is "entry update".
type entryUpdateCommand struct {
	fields entryFields
	out    outputFormat
}

func (*entryUpdateCommand) synopsis() string { return "Updates registration entries" }

func (c *entryUpdateCommand) appendFlags(fs *flag.FlagSet) {
	c.fields.appendFlags(fs, false)
	addOutputFlag(fs, &c.out)
}

func (c *entryUpdateCommand) buildRequest(stdin io.Reader) (*entryv1.BatchUpdateEntryRequest, error) {
	entries, err := c.fields.entries(stdin, false)
	if err != nil {
		return nil, err
	}
	return &entryv1.BatchUpdateEntryRequest{Entries: entries}, nil
}

func (c *entryUpdateCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest(e.stdin)
	if err != nil {
		return err
	}
	resp, err := cl.entry().BatchUpdateEntry(ctx, req)
	if err != nil {
		return err
	}
	for i, r := range resp.Results {
		if r.GetStatus().GetCode() != int32(codes.OK) && i < len(req.Entries) {
			r.Entry = req.Entries[i]
		}
	}
	return printUpdateResults(e, c.out, resp)
}

func printUpdateResults(e *env, out outputFormat, resp *entryv1.BatchUpdateEntryResponse) error {
	return printEntryResults(e, out, resp, resp.Results, "update")
}

// entryDeleteCommand is "entry delete".
type entryDeleteCommand struct {
	entryID string
	out     outputFormat
}

func (*entryDeleteCommand) synopsis() string { return "Deletes registration entries" }

func (c *entryDeleteCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.entryID, "entryID", "", "The Registration Entry ID of the record to delete")
	addOutputFlag(fs, &c.out)
}

func (c *entryDeleteCommand) buildRequest() (*entryv1.BatchDeleteEntryRequest, error) {
	if c.entryID == "" {
		return nil, errors.New("an entry ID is required (set -entryID)")
	}
	return &entryv1.BatchDeleteEntryRequest{Ids: []string{c.entryID}}, nil
}

func (c *entryDeleteCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.entry().BatchDeleteEntry(ctx, req)
	if err != nil {
		return err
	}
	return printDeleteResults(e, c.out, resp)
}

// printDeleteResults prints as SPIRE's CLI does, blank lines and summary
// without a final newline included, since scripts compare this text.
func printDeleteResults(e *env, out outputFormat, resp *entryv1.BatchDeleteEntryResponse) error {
	if len(resp.Results) == 0 {
		return errors.New("server returned no result for the deleted entry")
	}
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	var ok, failed int
	for _, r := range resp.Results {
		if r.GetStatus().GetCode() == int32(codes.OK) {
			ok++
			e.printf("Deleted entry with ID: %s\n", r.Id)
		}
	}
	if ok > 0 {
		e.printf("\n\n")
	}
	for _, r := range resp.Results {
		if st := r.GetStatus(); st.GetCode() != int32(codes.OK) {
			failed++
			e.errPrintf("Failed to delete entry with ID %s (code: %s, msg: %q)\n", r.Id, codes.Code(st.GetCode()), st.GetMessage())
		}
	}
	if failed == 0 {
		e.printf("Deleted %d entries successfully", ok)
		return nil
	}
	e.printf("\n\n")
	if ok == 0 {
		e.printf("Failed to delete %d entries", failed)
	} else {
		e.printf("Deleted %d entries successfully, but failed to delete %d entries", ok, failed)
	}
	return errors.New("failed to delete one or more entries")
}

// entryFilterFlags are the filters shared by "entry show" and "entry count".
type entryFilterFlags struct {
	parentID             string
	spiffeID             string
	hint                 string
	selectors            stringsFlag
	federatesWith        stringsFlag
	downstream           bool
	matchSelectorsOn     string
	matchFederatesWithOn string
}

func (f *entryFilterFlags) appendFlags(fs *flag.FlagSet, verb string) {
	fs.StringVar(&f.parentID, "parentID", "", "The Parent ID of the records to "+verb)
	fs.StringVar(&f.spiffeID, "spiffeID", "", "The SPIFFE ID of the records to "+verb)
	fs.BoolVar(&f.downstream, "downstream", false, "A boolean value that, when set, indicates that the entry describes a downstream SPIRE server")
	fs.Var(&f.selectors, "selector", "A colon-delimited type:value selector. Can be used more than once")
	fs.Var(&f.federatesWith, "federatesWith", "SPIFFE ID of a trust domain an entry is federate with. Can be used more than once")
	fs.StringVar(&f.matchFederatesWithOn, "matchFederatesWithOn", "superset", "The match mode used when filtering by federates with. Options: exact, any, superset and subset")
	fs.StringVar(&f.matchSelectorsOn, "matchSelectorsOn", "superset", "The match mode used when filtering by selectors. Options: exact, any, superset and subset")
	fs.StringVar(&f.hint, "hint", "", "The Hint of the records to "+verb+" (optional)")
}

// buildFilter turns the filter flags into a ListEntries filter. -downstream
// filters only when set: an unset flag means "any entry".
func (f *entryFilterFlags) buildFilter() (*entryv1.ListEntriesRequest_Filter, error) {
	filter := &entryv1.ListEntriesRequest_Filter{}
	if f.parentID != "" {
		id, err := idToProto(f.parentID)
		if err != nil {
			return nil, fmt.Errorf("error parsing parent ID %q: %w", f.parentID, err)
		}
		filter.ByParentId = id
	}
	if f.spiffeID != "" {
		id, err := idToProto(f.spiffeID)
		if err != nil {
			return nil, fmt.Errorf("error parsing SPIFFE ID %q: %w", f.spiffeID, err)
		}
		filter.BySpiffeId = id
	}
	if len(f.selectors) > 0 {
		match, err := parseSelectorMatch(f.matchSelectorsOn)
		if err != nil {
			return nil, err
		}
		selectors, err := parseSelectors(f.selectors)
		if err != nil {
			return nil, fmt.Errorf("error parsing selectors: %w", err)
		}
		filter.BySelectors = &types.SelectorMatch{Selectors: selectors, Match: match}
	}
	if len(f.federatesWith) > 0 {
		match, err := parseFederatesWithMatch(f.matchFederatesWithOn)
		if err != nil {
			return nil, err
		}
		filter.ByFederatesWith = &types.FederatesWithMatch{TrustDomains: f.federatesWith, Match: match}
	}
	if f.hint != "" {
		filter.ByHint = wrapperspb.String(f.hint)
	}
	if f.downstream {
		filter.ByDownstream = wrapperspb.Bool(true)
	}
	return filter, nil
}

// entryShowCommand is "entry show".
type entryShowCommand struct {
	entryID string
	filter  entryFilterFlags
	out     outputFormat
}

func (*entryShowCommand) synopsis() string { return "Displays configured registration entries" }

func (c *entryShowCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.entryID, "entryID", "", "The Entry ID of the records to show")
	c.filter.appendFlags(fs, "show")
	addOutputFlag(fs, &c.out)
}

// buildRequest returns either a GetEntry request (with -entryID) or the
// first page of a ListEntries request.
func (c *entryShowCommand) buildRequest() (*entryv1.GetEntryRequest, *entryv1.ListEntriesRequest, error) {
	if c.entryID != "" {
		if c.filter.parentID != "" || c.filter.spiffeID != "" || len(c.filter.selectors) > 0 {
			return nil, nil, errors.New("the -entryID flag can't be combined with others")
		}
		return &entryv1.GetEntryRequest{Id: c.entryID}, nil, nil
	}
	filter, err := c.filter.buildFilter()
	if err != nil {
		return nil, nil, err
	}
	return nil, &entryv1.ListEntriesRequest{Filter: filter, PageSize: listEntriesPageSize}, nil
}

func (c *entryShowCommand) run(ctx context.Context, e *env, cl *clients) error {
	getReq, listReq, err := c.buildRequest()
	if err != nil {
		return err
	}
	client := cl.entry()
	resp := &entryv1.ListEntriesResponse{}
	if getReq != nil {
		entry, err := client.GetEntry(ctx, getReq)
		if err != nil {
			return fmt.Errorf("error fetching entry ID %s: %w", c.entryID, err)
		}
		resp.Entries = append(resp.Entries, entry)
	} else {
		resp.Entries, err = listAllEntries(ctx, client, listReq)
		if err != nil {
			return err
		}
	}
	sortEntries(resp.Entries)
	return printShowResults(e, c.out, resp)
}

// listAllEntries follows page tokens until the server has none left.
func listAllEntries(ctx context.Context, client entryv1.EntryClient, req *entryv1.ListEntriesRequest) ([]*types.Entry, error) {
	var all []*types.Entry
	seen := map[string]bool{}
	for {
		resp, err := client.ListEntries(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("error fetching entries: %w", err)
		}
		all = append(all, resp.Entries...)
		next := resp.NextPageToken
		if next == "" {
			return all, nil
		}
		if seen[next] {
			return nil, fmt.Errorf("error fetching entries: server repeated page token %q", next)
		}
		seen[next] = true
		req.PageToken = next
	}
}

func printShowResults(e *env, out outputFormat, resp *entryv1.ListEntriesResponse) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	n := len(resp.Entries)
	e.printf("Found %d %s\n", n, pluralize(n, "entry", "entries"))
	for _, entry := range resp.Entries {
		printEntry(e.stdout, entry)
	}
	return nil
}

// sortEntries orders entries for stable output: by SPIFFE ID, parent ID,
// TTLs, then selectors, with each entry's selectors sorted first.
func sortEntries(entries []*types.Entry) {
	for _, e := range entries {
		if e != nil {
			sortSelectors(e.Selectors)
		}
	}
	slices.SortStableFunc(entries, compareEntries)
}

func sortSelectors(s []*types.Selector) {
	slices.SortStableFunc(s, compareSelector)
}

func compareSelector(a, b *types.Selector) int {
	if c := strings.Compare(a.GetType(), b.GetType()); c != 0 {
		return c
	}
	return strings.Compare(a.GetValue(), b.GetValue())
}

func compareEntries(a, b *types.Entry) int {
	if c := strings.Compare(idString(a.GetSpiffeId()), idString(b.GetSpiffeId())); c != 0 {
		return c
	}
	if c := strings.Compare(idString(a.GetParentId()), idString(b.GetParentId())); c != 0 {
		return c
	}
	if a.GetX509SvidTtl() != b.GetX509SvidTtl() {
		return int(a.GetX509SvidTtl()) - int(b.GetX509SvidTtl())
	}
	if a.GetJwtSvidTtl() != b.GetJwtSvidTtl() {
		return int(a.GetJwtSvidTtl()) - int(b.GetJwtSvidTtl())
	}
	return slices.CompareFunc(a.GetSelectors(), b.GetSelectors(), compareSelector)
}

// entryCountCommand is "entry count".
type entryCountCommand struct {
	filter entryFilterFlags
	out    outputFormat
}

func (*entryCountCommand) synopsis() string { return "Count registration entries" }

func (c *entryCountCommand) appendFlags(fs *flag.FlagSet) {
	c.filter.appendFlags(fs, "count")
	addOutputFlag(fs, &c.out)
}

func (c *entryCountCommand) buildRequest() (*entryv1.CountEntriesRequest, error) {
	f, err := c.filter.buildFilter()
	if err != nil {
		return nil, err
	}
	return &entryv1.CountEntriesRequest{Filter: &entryv1.CountEntriesRequest_Filter{
		BySpiffeId:      f.BySpiffeId,
		ByParentId:      f.ByParentId,
		BySelectors:     f.BySelectors,
		ByFederatesWith: f.ByFederatesWith,
		ByHint:          f.ByHint,
		ByDownstream:    f.ByDownstream,
	}}, nil
}

func (c *entryCountCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.entry().CountEntries(ctx, req)
	if err != nil {
		return err
	}
	return printEntryCount(e, c.out, resp)
}

func printEntryCount(e *env, out outputFormat, resp *entryv1.CountEntriesResponse) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	n := int(resp.Count)
	e.printf("%d registration %s\n", n, pluralize(n, "entry", "entries"))
	return nil
}

// printEntry writes one entry in SPIRE's layout, followed by a blank line.
// Rarely used fields appear only when set, to keep the output short.
func printEntry(w io.Writer, e *types.Entry) {
	if e == nil {
		e = &types.Entry{}
	}
	id := e.Id
	if id == "" {
		id = "(none)"
	}
	fmt.Fprintf(w, "Entry ID         : %s\n", id)
	fmt.Fprintf(w, "SPIFFE ID        : %s\n", idString(e.SpiffeId))
	fmt.Fprintf(w, "Parent ID        : %s\n", idString(e.ParentId))
	fmt.Fprintf(w, "Revision         : %d\n", e.RevisionNumber)
	if e.Downstream {
		fmt.Fprintf(w, "Downstream       : %t\n", e.Downstream)
	}
	if e.X509SvidTtl == 0 {
		fmt.Fprintf(w, "X509-SVID TTL    : default\n")
	} else {
		fmt.Fprintf(w, "X509-SVID TTL    : %d\n", e.X509SvidTtl)
	}
	if e.JwtSvidTtl == 0 {
		fmt.Fprintf(w, "JWT-SVID TTL     : default\n")
	} else {
		fmt.Fprintf(w, "JWT-SVID TTL     : %d\n", e.JwtSvidTtl)
	}
	if e.ExpiresAt != 0 {
		fmt.Fprintf(w, "Expiration time  : %s\n", time.Unix(e.ExpiresAt, 0).UTC())
	}
	for _, s := range e.Selectors {
		fmt.Fprintf(w, "Selector         : %s:%s\n", s.GetType(), s.GetValue())
	}
	for _, td := range e.FederatesWith {
		fmt.Fprintf(w, "FederatesWith    : %s\n", td)
	}
	for _, dns := range e.DnsNames {
		fmt.Fprintf(w, "DNS name         : %s\n", dns)
	}
	if e.Admin {
		fmt.Fprintf(w, "Admin            : %t\n", e.Admin)
	}
	if e.StoreSvid {
		fmt.Fprintf(w, "StoreSvid        : %t\n", e.StoreSvid)
	}
	if e.Hint != "" {
		fmt.Fprintf(w, "Hint             : %s\n", e.Hint)
	}
	fmt.Fprintln(w)
}
