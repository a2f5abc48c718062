package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// supervisedConn sends each call to the plugin's current process and
// turns the ways a plugin fails into Unavailable errors that name it: a
// process that went away, and a plugin that sat on a call for CallTimeout
// (a hung plugin, which is then restarted too).
type supervisedConn Plugin

var _ grpc.ClientConnInterface = (*supervisedConn)(nil)

func (c *supervisedConn) plugin() *Plugin { return (*Plugin)(c) }

var errHostTimeout = errors.New("plugin: call timed out")

// probeTimeout bounds the health check that tells a plugin that answered
// Unavailable itself from one that is gone.
const probeTimeout = 2 * time.Second

// check classifies the error of a call made on inst that ran for elapsed.
func (c *supervisedConn) check(ctx context.Context, inst *instance, method string, err error, elapsed time.Duration) error {
	if err == nil {
		return nil
	}
	p := c.plugin()
	code := status.Code(err)
	switch {
	case inst.client.Exited() || (code == codes.Unavailable && !inst.alive()):
		p.fail(inst, fmt.Errorf("%s: %v", method, err))
		return status.Errorf(codes.Unavailable, "plugin %s failed: %v", p.cfg.Label(), status.Convert(err).Message())
	case hung(ctx, code, elapsed, p.cfg.CallTimeout):
		why := fmt.Errorf("%s did not answer within %s", method, p.cfg.CallTimeout)
		p.fail(inst, why)
		return status.Errorf(codes.Unavailable, "plugin %s is not answering: %v", p.cfg.Label(), why)
	}
	// The plugin's own answer, Unavailable from its backend included: a
	// healthy plugin is not restarted for what it reports.
	return err
}

// hung reports whether a call ended because the plugin sat on it: the
// host's own timer fired, or the call ran for (nearly) the whole
// CallTimeout before a deadline ended it. The plugin's side may report a
// deadline (an RST_STREAM) a moment before the host's timer fires, and an
// adapter may set a deadline of the same length as the host's. A caller's
// shorter deadline or cancellation is the caller's business.
func hung(ctx context.Context, code codes.Code, elapsed, limit time.Duration) bool {
	if code != codes.DeadlineExceeded && code != codes.Canceled {
		return false
	}
	if context.Cause(ctx) == errHostTimeout {
		return true
	}
	return code == codes.DeadlineExceeded && elapsed >= limit*9/10
}

// refused logs a call turned away while the plugin is down, once per
// outage: the Workload API may ask many times a second.
func (p *Plugin) refused(method string, err error) {
	p.mu.Lock()
	first := !p.refusedLogged
	p.refusedLogged = true
	p.mu.Unlock()
	if first {
		p.log.Warn("Plugin calls refused until it is back", "method", method, "error", err)
	}
}

// Invoke implements grpc.ClientConnInterface.
func (c *supervisedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	p := c.plugin()
	inst, err := p.current()
	if err != nil {
		p.refused(method, err)
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, p.cfg.CallTimeout, errHostTimeout)
	defer cancel()
	start := time.Now()
	err = inst.conn.Invoke(ctx, method, args, reply, opts...)
	return c.check(ctx, inst, method, err, time.Since(start))
}

// NewStream implements grpc.ClientConnInterface. A stream has no deadline
// of its own from the host: only the time the plugin takes to send each
// message counts (see RecvMsg), since between messages a stream may wait on
// the other side (an agent answering a challenge).
func (c *supervisedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p := c.plugin()
	inst, err := p.current()
	if err != nil {
		p.refused(method, err)
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	s, err := inst.conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		err = c.check(ctx, inst, method, err, 0)
		cancel(nil)
		return nil, err
	}
	return &supervisedStream{ClientStream: s, c: c, ctx: ctx, cancel: cancel, inst: inst, method: method, serverStreams: desc.ServerStreams}, nil
}

type supervisedStream struct {
	grpc.ClientStream
	c             *supervisedConn
	ctx           context.Context
	cancel        context.CancelCauseFunc
	inst          *instance
	method        string
	serverStreams bool
}

// RecvMsg waits for the plugin's next message for at most CallTimeout; a
// plugin that takes longer is hung, and the stream ends.
func (s *supervisedStream) RecvMsg(m any) error {
	limit := s.c.cfg.CallTimeout
	timer := time.AfterFunc(limit, func() { s.cancel(errHostTimeout) })
	start := time.Now()
	err := s.ClientStream.RecvMsg(m)
	timer.Stop()
	switch {
	case err == nil && !s.serverStreams:
		s.cancel(nil) // the one reply of a client-streaming call: done
	case errors.Is(err, io.EOF):
		s.cancel(nil)
	case err != nil:
		err = s.c.check(s.ctx, s.inst, s.method, err, time.Since(start))
		s.cancel(nil)
	}
	return err
}

func (s *supervisedStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err != nil && !errors.Is(err, io.EOF) {
		// io.EOF means the stream ended; RecvMsg has its status.
		err = s.c.check(s.ctx, s.inst, s.method, err, 0)
		s.cancel(nil)
	}
	return err
}

// recoverUnary and recoverStream keep a bug in a host service from taking
// the daemon down with the plugin that called it.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (_ any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicked(log, info.FullMethod, r)
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicked(log, info.FullMethod, r)
			}
		}()
		return h(srv, ss)
	}
}

func panicked(log *slog.Logger, method string, r any) error {
	log.Error("Host service panicked", "method", method, "cause", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "host service %s failed", method)
}
