package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// agentPurgeCommand is "agent purge": it deletes the agents whose SVID
// expired more than -expiredFor ago. Only agents that can re-attest are
// considered, as in SPIRE: deleting a TOFU agent (join token, ...) would
// lock it out for good, since it could never attest again.
type agentPurgeCommand struct {
	expiredFor time.Duration
	dryRun     bool
	out        outputFormat
}

func (*agentPurgeCommand) synopsis() string {
	return "Purge expired agents that were attested using a non-TOFU security model based on a given time"
}

func (c *agentPurgeCommand) appendFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.expiredFor, "expiredFor", 30*24*time.Hour, "Amount of time that has passed since the agent's SVID has expired. It is used to determine which agents to purge.")
	fs.BoolVar(&c.dryRun, "dryRun", false, "Indicates that the command will not perform any action, but will print the agents that would be purged.")
	addOutputFlag(fs, &c.out)
}

// purgeResult is SPIRE's JSON shape for the command's result.
type purgeResult struct {
	Agents []*purgedAgent `json:"expired_agents"`
}

type purgedAgent struct {
	AgentID string `json:"agent_id"`
	Deleted bool   `json:"deleted"`
	Error   string `json:"error,omitempty"`
}

func (c *agentPurgeCommand) run(ctx context.Context, e *env, cl *clients) error {
	client := cl.agent()
	req := &agentv1.ListAgentsRequest{
		Filter:     &agentv1.ListAgentsRequest_Filter{ByCanReattest: wrapperspb.Bool(true)},
		OutputMask: &types.AgentMask{X509SvidExpiresAt: true},
		PageSize:   listAgentsPageSize,
	}
	var expired []*types.Agent
	seen := map[string]bool{}
	for {
		resp, err := client.ListAgents(ctx, req)
		if err != nil {
			return fmt.Errorf("failed to list agents: %w", err)
		}
		for _, a := range resp.Agents {
			if time.Since(time.Unix(a.X509SvidExpiresAt, 0)) > c.expiredFor {
				expired = append(expired, a)
			}
		}
		// Delete only once the listing is complete, so that deleting does
		// not shift the pages still to be read.
		if resp.NextPageToken == "" {
			break
		}
		if seen[resp.NextPageToken] {
			return fmt.Errorf("failed to list agents: server repeated page token %q", resp.NextPageToken)
		}
		seen[resp.NextPageToken] = true
		req.PageToken = resp.NextPageToken
	}
	result := &purgeResult{Agents: []*purgedAgent{}}
	for _, a := range expired {
		r := &purgedAgent{AgentID: idString(a.Id)}
		if !c.dryRun {
			if _, err := client.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: a.Id}); err != nil {
				r.Error = err.Error()
			} else {
				r.Deleted = true
			}
		}
		result.Agents = append(result.Agents, r)
	}
	return printPurgeResult(e, c.out, c.dryRun, result)
}

// printPurgeResult writes SPIRE's report: the count, then with -dryRun the
// agents that would go, else those purged and those that failed with why.
func printPurgeResult(e *env, out outputFormat, dryRun bool, r *purgeResult) error {
	if out == outputJSON {
		return printStructJSON(e.stdout, r)
	}
	n := len(r.Agents)
	if n == 0 {
		e.printf("No agents to purge.\n")
		return nil
	}
	e.printf("Found %d expired %s\n\n", n, pluralize(n, "agent", "agents"))
	if dryRun {
		e.printf("\nAgents that can be purged:\n")
		for _, a := range r.Agents {
			e.printf("SPIFFE ID         : %s\n", a.AgentID)
		}
		return nil
	}
	var purged, failed []*purgedAgent
	for _, a := range r.Agents {
		if a.Deleted {
			purged = append(purged, a)
		} else {
			failed = append(failed, a)
		}
	}
	if len(purged) > 0 {
		e.printf("Agents purged:\n")
		for _, a := range purged {
			e.printf("SPIFFE ID         : %s\n", a.AgentID)
		}
	}
	if len(failed) > 0 {
		e.printf("Agents not purged:\n")
		for _, a := range failed {
			e.printf("SPIFFE ID         : %s\n", a.AgentID)
			e.printf("Error             : %s\n", a.Error)
		}
	}
	return nil
}
