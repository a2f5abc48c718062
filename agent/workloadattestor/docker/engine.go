package docker

import (
	"context"
	"fmt"
	"sync/atomic"

	dockerclient "github.com/docker/docker/client"
)

// engine hands out the Docker client once its API version is settled.
//
// The client library can negotiate the version itself, lazily, on the
// first request, but then it holds a mutex across the ping that later
// requests wait on whatever their context says (so one request to an
// engine that hangs stalls every other past its own deadline), and its
// events stream reads the version unguarded while a request may be writing
// it. So the version is settled here, before the client is shared: one
// ping at a time, each bounded by its caller's context, and a client whose
// version never changes afterwards.
type engine struct {
	host string
	cl   atomic.Pointer[dockerclient.Client]
	// next is the client being negotiated, not yet shared; sem admits one
	// negotiation at a time.
	next *dockerclient.Client
	sem  chan struct{}
}

// newEngine creates the client for host. With version set, no
// negotiation is needed.
func newEngine(host, version string) (*engine, error) {
	e := &engine{host: host, sem: make(chan struct{}, 1)}
	opts := []dockerclient.Opt{dockerclient.WithHost(host)}
	if version != "" {
		opts = append(opts, dockerclient.WithVersion(version))
	} else {
		opts = append(opts, dockerclient.WithAPIVersionNegotiation())
	}
	c, err := dockerclient.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", host, err)
	}
	if version != "" {
		e.cl.Store(c)
	} else {
		e.next = c
	}
	return e, nil
}

// client returns the client, negotiating its API version with the engine
// first if that has not succeeded yet.
func (e *engine) client(ctx context.Context) (*dockerclient.Client, error) {
	if c := e.cl.Load(); c != nil {
		return c, nil
	}
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("negotiate API version: %w", ctx.Err())
	}
	defer func() { <-e.sem }()
	if c := e.cl.Load(); c != nil {
		return c, nil
	}
	// A ping does not use the version, and nothing else uses this client
	// yet, so settling the version here races with nothing.
	ping, err := e.next.Ping(ctx)
	if err != nil {
		return nil, fmt.Errorf("negotiate API version: %w", err)
	}
	e.next.NegotiateAPIVersionPing(ping)
	e.cl.Store(e.next)
	return e.next, nil
}

// close closes the client's idle connections.
func (e *engine) close() error {
	if c := e.cl.Load(); c != nil {
		return c.Close()
	}
	e.sem <- struct{}{}
	defer func() { <-e.sem }()
	if e.next != nil {
		return e.next.Close()
	}
	return nil
}
