package cli

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthcheck asks the agent's gRPC health service, as SPIRE's agent
// healthcheck does, then the Workload API for an X.509-SVID, as it did. PermissionDenied means the agent attested us and has no
// entry for us: it is up and answering, so it counts as healthy. -shallow
// only checks that the socket accepts connections.
func (e *env) healthcheck(args []string) error {
	var c common
	var shallow, verbose bool
	fs := e.flagSet("health", &c, false)
	fs.BoolVar(&shallow, "shallow", false, "Perform a less stringent health check")
	fs.BoolVar(&verbose, "verbose", false, "Print verbose information")
	if err := fs.Parse(args); err != nil {
		return err
	}
	unhealthy := func(reason error) error {
		fmt.Fprintf(e.stderr, "Agent is unhealthy: %v\n", reason)
		return errReported
	}
	if verbose {
		e.printf("Contacting Workload API...\n")
	}
	if shallow {
		d := net.Dialer{Timeout: c.timeout}
		conn, err := d.DialContext(e.ctx, "unix", c.socketPath)
		if err != nil {
			return unhealthy(fmt.Errorf("unable to connect: %w", err))
		}
		conn.Close()
		e.printf("Agent is healthy.\n")
		return nil
	}

	ctx, cancel := e.withTimeout(&c)
	defer cancel()
	// The agent's readiness first, through the gRPC health service as
	// SPIRE's healthcheck asks it: NOT_SERVING until the agent has
	// attested, and while its SVID has expired or the server has been
	// away longer than the SVID has left. An agent without the service
	// is judged by the Workload API alone.
	if err := e.checkHealthService(ctx, &c); err != nil {
		return unhealthy(err)
	}
	cl, err := e.client(&c)
	if err != nil {
		return unhealthy(err)
	}
	defer cl.Close()
	_, err = cl.FetchX509SVID(ctx)
	switch {
	case err == nil:
		if verbose {
			e.printf("SVID received over Workload API.\n")
		}
	case status.Code(err) == codes.PermissionDenied:
		if verbose {
			e.printf("Workload API returned %s\n", status.Convert(err).Message())
		}
	case status.Code(err) == codes.Unavailable || errors.Is(err, ctx.Err()) || status.Code(err) == codes.DeadlineExceeded:
		return unhealthy(fmt.Errorf("agent is unavailable: %w", err))
	default:
		return unhealthy(err)
	}
	e.printf("Agent is healthy.\n")
	return nil
}

// checkHealthService asks the socket's grpc.health.v1 service.
func (e *env) checkHealthService(ctx context.Context, c *common) error {
	conn, err := grpc.NewClient("unix://"+c.socketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("unable to connect to the Workload API at %s: %w", c.socketPath, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented:
		return nil
	case err != nil:
		return fmt.Errorf("unable to determine health: %w", err)
	case resp.Status != healthpb.HealthCheckResponse_SERVING:
		return fmt.Errorf("agent returned status %q", resp.Status)
	}
	return nil
}
