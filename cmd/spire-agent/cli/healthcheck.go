package cli

import (
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// healthcheck asks the Workload API for an X.509-SVID, as SPIRE's agent
// healthcheck did. PermissionDenied means the agent attested us and has no
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

	cl, err := e.client(&c)
	if err != nil {
		return unhealthy(err)
	}
	defer cl.Close()
	ctx, cancel := e.withTimeout(&c)
	defer cancel()
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
