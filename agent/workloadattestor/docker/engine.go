package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	dockerclient "github.com/docker/docker/client"
)

// maxAnswerBytes bounds one answer of the engine other than the event
// stream: an inspect is a few kilobytes, and the client library reads
// answers whole, so an engine (or whatever listens on its socket) sending
// without end would otherwise grow the agent until it is killed.
const maxAnswerBytes = 16 << 20

// errAnswerTooLarge is the read error of an answer past maxAnswerBytes.
var errAnswerTooLarge = fmt.Errorf("the engine's answer is larger than %d bytes", maxAnswerBytes)

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
	// base is the client's transport, closed with the engine since the
	// client cannot see it behind the size cap.
	base *http.Transport
	cl   atomic.Pointer[dockerclient.Client]
	// next is the client being negotiated, not yet shared; sem admits one
	// negotiation at a time.
	next *dockerclient.Client
	sem  chan struct{}
}

// newEngine creates the client for host. With version set, no
// negotiation is needed.
func newEngine(host, version string) (*engine, error) {
	e := &engine{host: host, sem: make(chan struct{}, 1), base: &http.Transport{}}
	hc := &http.Client{Transport: e.base}
	opts := []dockerclient.Opt{
		// WithHost dials the engine's socket through the transport it finds
		// in place, so the cap goes round it afterwards.
		dockerclient.WithHTTPClient(hc),
		dockerclient.WithHost(host),
		func(*dockerclient.Client) error {
			hc.Transport = capTransport{e.base}
			return nil
		},
	}
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

// capTransport caps every answer but the event stream, which is read a
// message at a time for as long as the subscription lasts.
type capTransport struct{ base http.RoundTripper }

func (t capTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || strings.HasSuffix(req.URL.Path, "/events") {
		return resp, err
	}
	resp.Body = &cappedBody{rc: resp.Body, left: maxAnswerBytes}
	return resp, nil
}

// cappedBody fails a read past its limit rather than truncating, so that a
// cut answer is never taken for a whole one.
type cappedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, err := b.rc.Read(one[:]); n > 0 || !errors.Is(err, io.EOF) {
			return 0, errAnswerTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// close closes the client's idle connections.
func (e *engine) close() error {
	defer e.base.CloseIdleConnections()
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
