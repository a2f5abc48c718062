package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// tokenGenerateCommand is "token generate". With -spiffeID the server also
// creates the node alias entry mapping the token's agent ID to that ID.
type tokenGenerateCommand struct {
	spiffeID string
	ttl      int
	out      outputFormat
}

func (*tokenGenerateCommand) synopsis() string { return "Generates a join token" }

func (c *tokenGenerateCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.spiffeID, "spiffeID", "", "Additional SPIFFE ID to assign the token owner (optional)")
	fs.IntVar(&c.ttl, "ttl", 600, "Token TTL in seconds")
	addOutputFlag(fs, &c.out)
}

func (c *tokenGenerateCommand) buildRequest() (*agentv1.CreateJoinTokenRequest, error) {
	if c.ttl <= 0 {
		return nil, errors.New("a positive TTL is required (set -ttl)")
	}
	req := &agentv1.CreateJoinTokenRequest{Ttl: int32(min(c.ttl, maxInt32))}
	if c.spiffeID != "" {
		id, err := idToProto(c.spiffeID)
		if err != nil {
			return nil, fmt.Errorf("invalid -spiffeID %q: %w", c.spiffeID, err)
		}
		req.AgentId = id
	}
	return req, nil
}

func (c *tokenGenerateCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	token, err := cl.agent().CreateJoinToken(ctx, req)
	if err != nil {
		return err
	}
	return printToken(e, c.out, token, c.spiffeID == "")
}

func printToken(e *env, out outputFormat, token *types.JoinToken, missingID bool) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, token)
	}
	e.printf("Token: %s\n", token.GetValue())
	if missingID {
		e.printf("Warning: Missing SPIFFE ID.\n")
	}
	return nil
}

const maxInt32 = 1<<31 - 1

// healthcheckTimeout bounds a health check against a server that accepts
// the connection but never answers.
const healthcheckTimeout = 30 * time.Second

// healthcheckCommand is "healthcheck". It has no -output flag, like SPIRE's.
type healthcheckCommand struct {
	shallow bool
	verbose bool
}

func (*healthcheckCommand) synopsis() string { return "Determines server health status" }

func (c *healthcheckCommand) appendFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.shallow, "shallow", false, "Perform a less stringent health check")
	fs.BoolVar(&c.verbose, "verbose", false, "Print verbose information")
}

// run satisfies command; runCommand calls runHealthcheck instead so the
// command can report in its own words.
func (c *healthcheckCommand) run(ctx context.Context, e *env, cl *clients) error {
	return c.check(ctx, e, cl)
}

func (c *healthcheckCommand) runHealthcheck(ctx context.Context, e *env, socketPath string) int {
	if c.verbose {
		e.printf("Checking server health...\n")
	}
	err := func() error {
		cl, err := dial(socketPath)
		if err != nil {
			if c.verbose {
				e.errPrintf("Failed to create client: %v\n", err)
			}
			return errors.New("cannot create health client")
		}
		defer cl.conn.Close()
		return c.check(ctx, e, cl)
	}()
	if err != nil {
		e.errPrintf("Server is unhealthy: %v\n", err)
		return 1
	}
	e.printf("Server is healthy.\n")
	return 0
}

// check asks the server's gRPC health service for its overall status.
// -shallow is accepted for compatibility; the server's status already
// reflects only its own readiness.
func (c *healthcheckCommand) check(ctx context.Context, e *env, cl *clients) error {
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	resp, err := cl.health().Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if err != nil {
		if c.verbose {
			e.errPrintf("Failed to check health: %v\n", err)
		}
		return errors.New("unable to determine health")
	}
	return healthStatusError(resp)
}

func healthStatusError(resp *grpc_health_v1.HealthCheckResponse) error {
	if resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		return fmt.Errorf("server returned status %q", resp.GetStatus())
	}
	return nil
}
