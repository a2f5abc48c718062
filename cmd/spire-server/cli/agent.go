package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// listAgentsPageSize keeps one page well under gRPC's 4 MB message limit.
const listAgentsPageSize = 1000

// expiresBeforeLayout is the time format of -expiresBefore, as in SPIRE.
const expiresBeforeLayout = "2006-01-02 15:04:05 -0700 -07"

// agentFilterFlags are the filters of "agent list" and "agent count".
type agentFilterFlags struct {
	selectors        stringsFlag
	matchSelectorsOn string
	attestationType  string
	expiresBefore    string
	canReattest      triBool
	banned           triBool
}

func (f *agentFilterFlags) appendFlags(fs *flag.FlagSet) {
	fs.Var(&f.selectors, "selector", "A colon-delimited type:value selector. Can be used more than once")
	fs.StringVar(&f.attestationType, "attestationType", "", "Filter by attestation type, like join_token or x509pop.")
	fs.Var(&f.canReattest, "canReattest", "Filter based on string received, 'true': agents that can reattest, 'false': agents that can't reattest, other value will return all.")
	fs.Var(&f.banned, "banned", "Filter based on string received, 'true': banned agents, 'false': not banned agents, other value will return all.")
	fs.StringVar(&f.expiresBefore, "expiresBefore", "", "Filter by expiration time (format: \""+expiresBeforeLayout+"\")")
	fs.StringVar(&f.matchSelectorsOn, "matchSelectorsOn", "superset", "The match mode used when filtering by selectors. Options: exact, any, superset and subset")
}

func (f *agentFilterFlags) buildFilter() (*agentv1.ListAgentsRequest_Filter, error) {
	filter := &agentv1.ListAgentsRequest_Filter{ByAttestationType: f.attestationType}
	if len(f.selectors) > 0 {
		match, err := parseSelectorMatch(f.matchSelectorsOn)
		if err != nil {
			return nil, err
		}
		selectors := make([]*types.Selector, 0, len(f.selectors))
		for _, s := range f.selectors {
			sel, err := ParseSelector(s)
			if err != nil {
				return nil, fmt.Errorf("error parsing selector %q: %w", s, err)
			}
			selectors = append(selectors, sel)
		}
		filter.BySelectorMatch = &types.SelectorMatch{Selectors: selectors, Match: match}
	}
	if f.expiresBefore != "" {
		if _, err := time.Parse(expiresBeforeLayout, f.expiresBefore); err != nil {
			return nil, fmt.Errorf("date is not valid: %w", err)
		}
		filter.ByExpiresBefore = f.expiresBefore
	}
	filter.ByCanReattest = f.canReattest.wrapper()
	filter.ByBanned = f.banned.wrapper()
	return filter, nil
}

func (b triBool) wrapper() *wrapperspb.BoolValue {
	switch b {
	case triFalse:
		return wrapperspb.Bool(false)
	case triTrue:
		return wrapperspb.Bool(true)
	}
	return nil
}

// agentListCommand is "agent list".
type agentListCommand struct {
	filter agentFilterFlags
	out    outputFormat
}

func (*agentListCommand) synopsis() string { return "Lists attested agents and their SPIFFE IDs" }

func (c *agentListCommand) appendFlags(fs *flag.FlagSet) {
	c.filter.appendFlags(fs)
	addOutputFlag(fs, &c.out)
}

func (c *agentListCommand) buildRequest() (*agentv1.ListAgentsRequest, error) {
	filter, err := c.filter.buildFilter()
	if err != nil {
		return nil, err
	}
	return &agentv1.ListAgentsRequest{Filter: filter, PageSize: listAgentsPageSize}, nil
}

func (c *agentListCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	client := cl.agent()
	all := &agentv1.ListAgentsResponse{}
	seen := map[string]bool{}
	for {
		resp, err := client.ListAgents(ctx, req)
		if err != nil {
			return err
		}
		all.Agents = append(all.Agents, resp.Agents...)
		next := resp.NextPageToken
		if next == "" {
			break
		}
		if seen[next] {
			return fmt.Errorf("server repeated page token %q", next)
		}
		seen[next] = true
		req.PageToken = next
	}
	return printAgentList(e, c.out, all)
}

func printAgentList(e *env, out outputFormat, resp *agentv1.ListAgentsResponse) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	n := len(resp.Agents)
	if n == 0 {
		e.printf("No attested agents found\n")
		return nil
	}
	e.printf("Found %d attested %s:\n\n", n, pluralize(n, "agent", "agents"))
	for _, a := range resp.Agents {
		printAgent(e.stdout, a)
	}
	return nil
}

// printAgent writes one agent in SPIRE's layout, followed by a blank line.
// A banned agent has no certificate, so it shows "Banned" instead of a serial.
func printAgent(w io.Writer, a *types.Agent) {
	fmt.Fprintf(w, "SPIFFE ID         : %s\n", idString(a.GetId()))
	fmt.Fprintf(w, "Attestation type  : %s\n", a.GetAttestationType())
	fmt.Fprintf(w, "Expiration time   : %s\n", time.Unix(a.GetX509SvidExpiresAt(), 0))
	if a.GetBanned() {
		fmt.Fprintf(w, "Banned            : %t\n", a.GetBanned())
	} else {
		fmt.Fprintf(w, "Serial number     : %s\n", a.GetX509SvidSerialNumber())
	}
	fmt.Fprintf(w, "Can re-attest     : %t\n", a.GetCanReattest())
	fmt.Fprintln(w)
}

// agentCountCommand is "agent count".
type agentCountCommand struct {
	filter agentFilterFlags
	out    outputFormat
}

func (*agentCountCommand) synopsis() string { return "Count attested agents" }

func (c *agentCountCommand) appendFlags(fs *flag.FlagSet) {
	c.filter.appendFlags(fs)
	addOutputFlag(fs, &c.out)
}

func (c *agentCountCommand) buildRequest() (*agentv1.CountAgentsRequest, error) {
	f, err := c.filter.buildFilter()
	if err != nil {
		return nil, err
	}
	return &agentv1.CountAgentsRequest{Filter: &agentv1.CountAgentsRequest_Filter{
		ByAttestationType: f.ByAttestationType,
		BySelectorMatch:   f.BySelectorMatch,
		ByBanned:          f.ByBanned,
		ByCanReattest:     f.ByCanReattest,
		ByExpiresBefore:   f.ByExpiresBefore,
	}}, nil
}

func (c *agentCountCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.agent().CountAgents(ctx, req)
	if err != nil {
		return err
	}
	return printAgentCount(e, c.out, resp)
}

func printAgentCount(e *env, out outputFormat, resp *agentv1.CountAgentsResponse) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, resp)
	}
	n := int(resp.Count)
	e.printf("%d attested %s\n", n, pluralize(n, "agent", "agents"))
	return nil
}

// agentIDFlag is the -spiffeID of the single-agent commands.
type agentIDFlag struct {
	spiffeID string
}

func (f *agentIDFlag) appendFlags(fs *flag.FlagSet, verb string) {
	fs.StringVar(&f.spiffeID, "spiffeID", "", "The SPIFFE ID of the agent to "+verb+" (agent identity)")
}

func (f *agentIDFlag) id() (*types.SPIFFEID, error) {
	if f.spiffeID == "" {
		return nil, errors.New("a SPIFFE ID is required (set -spiffeID)")
	}
	id, err := idToProto(f.spiffeID)
	if err != nil {
		return nil, fmt.Errorf("invalid -spiffeID %q: %w", f.spiffeID, err)
	}
	return id, nil
}

// agentShowCommand is "agent show".
type agentShowCommand struct {
	agent agentIDFlag
	out   outputFormat
}

func (*agentShowCommand) synopsis() string {
	return "Shows the details of an attested agent given its SPIFFE ID"
}

func (c *agentShowCommand) appendFlags(fs *flag.FlagSet) {
	c.agent.appendFlags(fs, "show")
	addOutputFlag(fs, &c.out)
}

func (c *agentShowCommand) buildRequest() (*agentv1.GetAgentRequest, error) {
	id, err := c.agent.id()
	if err != nil {
		return nil, err
	}
	return &agentv1.GetAgentRequest{Id: id}, nil
}

func (c *agentShowCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	a, err := cl.agent().GetAgent(ctx, req)
	if err != nil {
		return err
	}
	return printAgentShow(e, c.out, a)
}

func printAgentShow(e *env, out outputFormat, a *types.Agent) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, a)
	}
	e.printf("Found an attested agent given its SPIFFE ID\n\n")
	printAgent(e.stdout, a)
	for _, s := range a.GetSelectors() {
		e.printf("Selectors         : %s:%s\n", s.GetType(), s.GetValue())
	}
	return nil
}

// agentEvictCommand is "agent evict": it deletes the agent so that it must
// attest again.
type agentEvictCommand struct {
	agent agentIDFlag
	out   outputFormat
}

func (*agentEvictCommand) synopsis() string { return "Evicts an attested agent given its SPIFFE ID" }

func (c *agentEvictCommand) appendFlags(fs *flag.FlagSet) {
	c.agent.appendFlags(fs, "evict")
	addOutputFlag(fs, &c.out)
}

func (c *agentEvictCommand) buildRequest() (*agentv1.DeleteAgentRequest, error) {
	id, err := c.agent.id()
	if err != nil {
		return nil, err
	}
	return &agentv1.DeleteAgentRequest{Id: id}, nil
}

func (c *agentEvictCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.agent().DeleteAgent(ctx, req)
	if err != nil {
		return err
	}
	return printEmpty(e, c.out, resp, "Agent evicted successfully")
}

// agentBanCommand is "agent ban": the agent is evicted and may not attest
// again with the same ID.
type agentBanCommand struct {
	agent agentIDFlag
	out   outputFormat
}

func (*agentBanCommand) synopsis() string { return "Ban an attested agent given its SPIFFE ID" }

func (c *agentBanCommand) appendFlags(fs *flag.FlagSet) {
	c.agent.appendFlags(fs, "ban")
	addOutputFlag(fs, &c.out)
}

func (c *agentBanCommand) buildRequest() (*agentv1.BanAgentRequest, error) {
	id, err := c.agent.id()
	if err != nil {
		return nil, err
	}
	return &agentv1.BanAgentRequest{Id: id}, nil
}

func (c *agentBanCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	resp, err := cl.agent().BanAgent(ctx, req)
	if err != nil {
		return err
	}
	return printEmpty(e, c.out, resp, "Agent banned successfully")
}

// printEmpty reports a call whose response carries nothing.
func printEmpty(e *env, out outputFormat, resp *emptypb.Empty, msg string) error {
	if out == outputJSON {
		if resp == nil {
			resp = &emptypb.Empty{}
		}
		return printProtoJSON(e.stdout, resp)
	}
	e.printf("%s\n", msg)
	return nil
}
