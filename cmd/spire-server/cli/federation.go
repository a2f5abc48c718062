package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"

	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The federation commands speak trustdomain/v1 with SPIRE's flags, output
// and errors: create, update, delete, list, show and refresh of the
// dynamic federation relationships.

func (c *clients) trustDomain() trustdomainv1.TrustDomainClient {
	return trustdomainv1.NewTrustDomainClient(c.conn)
}

// printRelationship is SPIRE's block for one relationship.
func printRelationship(printf func(string, ...any), fr *types.FederationRelationship) {
	printf("Trust domain              : %s\n", fr.GetTrustDomain())
	printf("Bundle endpoint URL       : %s\n", fr.GetBundleEndpointUrl())
	switch p := fr.GetBundleEndpointProfile().(type) {
	case *types.FederationRelationship_HttpsWeb:
		printf("Bundle endpoint profile   : %s\n", profileHTTPSWeb)
	case *types.FederationRelationship_HttpsSpiffe:
		printf("Bundle endpoint profile   : %s\n", profileHTTPSSPIFFE)
		printf("Endpoint SPIFFE ID        : %s\n", p.HttpsSpiffe.GetEndpointSpiffeId())
	}
}

// federationInput is what create and update share: -data or the
// relationship flags, never both.
type federationInput struct {
	data   string
	config federationConfig
}

func (in *federationInput) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&in.data, "data", "", "Path to a file containing federation relationships in JSON format (optional). If set to '-', read the JSON from stdin.")
	in.config.appendFlags(fs)
}

func (in *federationInput) relationships(e *env) ([]*types.FederationRelationship, error) {
	if in.data == "" {
		fr, err := in.config.toProto()
		if err != nil {
			return nil, err
		}
		return []*types.FederationRelationship{fr}, nil
	}
	if !in.config.isEmpty() {
		return nil, errors.New("cannot use other flags to specify relationship fields when 'data' flag is set")
	}
	var data []byte
	var err error
	if in.data == "-" {
		data, err = readLimited(e.stdin, "stdin", maxEntryDataSize)
	} else {
		data, err = readFileLimited(in.data, maxEntryDataSize)
	}
	if err != nil {
		return nil, err
	}
	return ParseFederationJSON(data)
}

// batchResult is one result of a create or update batch.
type batchResult interface {
	GetStatus() *types.Status
	GetFederationRelationship() *types.FederationRelationship
}

// printBatch prints what SPIRE's create and update print: the stored
// relationships on stdout, then each refused one, as the request gave it,
// on stderr with its status; verb is "create" or "update".
func printBatch[R batchResult](e *env, verb string, sent []*types.FederationRelationship, results []R) error {
	var failed []int
	for i, r := range results {
		if codes.Code(r.GetStatus().GetCode()) != codes.OK {
			failed = append(failed, i)
			continue
		}
		e.printf("\n")
		printRelationship(e.printf, r.GetFederationRelationship())
	}
	for _, i := range failed {
		st := results[i].GetStatus()
		e.printf("\n")
		e.errPrintf("Failed to %s the following federation relationship (code: %s, msg: %q):\n", verb, codes.Code(st.GetCode()), st.GetMessage())
		if i < len(sent) {
			printRelationship(e.errPrintf, sent[i])
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed to %s one or more federation relationships", verb)
	}
	return nil
}

// federationCreateCommand is "federation create".
type federationCreateCommand struct {
	in  federationInput
	out outputFormat
}

func (*federationCreateCommand) synopsis() string {
	return "Creates a dynamic federation relationship with a foreign trust domain"
}

func (c *federationCreateCommand) appendFlags(fs *flag.FlagSet) {
	c.in.appendFlags(fs)
	addOutputFlag(fs, &c.out)
}

func (c *federationCreateCommand) run(ctx context.Context, e *env, cl *clients) error {
	frs, err := c.in.relationships(e)
	if err != nil {
		return err
	}
	resp, err := cl.trustDomain().BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{FederationRelationships: frs})
	if err != nil {
		return fmt.Errorf("request failed: %w", err)
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	return printBatch(e, "create", frs, resp.Results)
}

// federationUpdateCommand is "federation update": every field of each
// relationship given replaces the stored one (SPIRE sends no input mask).
type federationUpdateCommand struct {
	in  federationInput
	out outputFormat
}

func (*federationUpdateCommand) synopsis() string {
	return "Updates a dynamic federation relationship with a foreign trust domain"
}

func (c *federationUpdateCommand) appendFlags(fs *flag.FlagSet) {
	c.in.appendFlags(fs)
	addOutputFlag(fs, &c.out)
}

func (c *federationUpdateCommand) run(ctx context.Context, e *env, cl *clients) error {
	frs, err := c.in.relationships(e)
	if err != nil {
		return err
	}
	resp, err := cl.trustDomain().BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{FederationRelationships: frs})
	if err != nil {
		return fmt.Errorf("request failed: %w", err)
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	return printBatch(e, "update", frs, resp.Results)
}

// federationDeleteCommand is "federation delete -id".
type federationDeleteCommand struct {
	id  string
	out outputFormat
}

func (*federationDeleteCommand) synopsis() string { return "Deletes a dynamic federation relationship" }

func (c *federationDeleteCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.id, "id", "", "SPIFFE ID of the trust domain")
	addOutputFlag(fs, &c.out)
}

func (c *federationDeleteCommand) run(ctx context.Context, e *env, cl *clients) error {
	if c.id == "" {
		return errors.New("id is required")
	}
	resp, err := cl.trustDomain().BatchDeleteFederationRelationship(ctx, &trustdomainv1.BatchDeleteFederationRelationshipRequest{TrustDomains: []string{c.id}})
	if err != nil {
		return fmt.Errorf("failed to delete federation relationship: %w", err)
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	if len(resp.Results) == 0 {
		return errors.New("failed to delete federation relationship: the server answered without a result")
	}
	r := resp.Results[0]
	if codes.Code(r.Status.GetCode()) != codes.OK {
		return fmt.Errorf("failed to delete federation relationship %q: %s", r.TrustDomain, r.Status.GetMessage())
	}
	e.printf("federation relationship deleted.\n")
	return nil
}

// federationListCommand is "federation list".
type federationListCommand struct {
	out outputFormat
}

func (*federationListCommand) synopsis() string { return "Lists all dynamic federation relationships" }

func (c *federationListCommand) appendFlags(fs *flag.FlagSet) { addOutputFlag(fs, &c.out) }

func (c *federationListCommand) run(ctx context.Context, e *env, cl *clients) error {
	resp, err := cl.trustDomain().ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{})
	if err != nil {
		return fmt.Errorf("error listing federation relationship: %w", err)
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	n := len(resp.FederationRelationships)
	e.printf("Found %d %s\n", n, pluralize(n, "federation relationship", "federation relationships"))
	for _, fr := range resp.FederationRelationships {
		e.printf("\n")
		printRelationship(e.printf, fr)
	}
	return nil
}

// federationShowCommand is "federation show -trustDomain".
type federationShowCommand struct {
	trustDomain string
	out         outputFormat
}

func (*federationShowCommand) synopsis() string { return "Shows a dynamic federation relationship" }

func (c *federationShowCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.trustDomain, "trustDomain", "", "The trust domain name of the federation relationship to show")
	addOutputFlag(fs, &c.out)
}

func (c *federationShowCommand) run(ctx context.Context, e *env, cl *clients) error {
	if c.trustDomain == "" {
		return errors.New("a trust domain name is required")
	}
	fr, err := cl.trustDomain().GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: c.trustDomain})
	if err != nil {
		return fmt.Errorf("error showing federation relationship: %w", err)
	}
	if c.out == outputJSON {
		return printProtoJSON(e.stdout, fr)
	}
	e.printf("Found a federation relationship with trust domain %s:\n\n", c.trustDomain)
	printRelationship(e.printf, fr)
	return nil
}

// federationRefreshCommand is "federation refresh -id".
type federationRefreshCommand struct {
	id  string
	out outputFormat
}

func (*federationRefreshCommand) synopsis() string {
	return "Refreshes the bundle from the specified federated trust domain"
}

func (c *federationRefreshCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.id, "id", "", "SPIFFE ID of the trust domain")
	addOutputFlag(fs, &c.out)
}

func (c *federationRefreshCommand) run(ctx context.Context, e *env, cl *clients) error {
	if c.id == "" {
		return errors.New("id is required")
	}
	_, err := cl.trustDomain().RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: c.id})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return fmt.Errorf("there is no federation relationship with trust domain %q", c.id)
	default:
		return fmt.Errorf("failed to refresh bundle: %w", err)
	}
	if c.out == outputJSON {
		// SPIRE prints its OK status.
		return printProtoJSON(e.stdout, &types.Status{Code: int32(codes.OK), Message: "OK"})
	}
	e.printf("Bundle refreshed\n")
	return nil
}
