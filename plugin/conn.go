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
// turns the ways a plugin fails into Unavailable errors that name it:
// a process that went away, and a call that outlived CallTimeout (a hung
// plugin, which is then restarted too).
type supervisedConn Plugin

var _ grpc.ClientConnInterface = (*supervisedConn)(nil)

func (c *supervisedConn) plugin() *Plugin { return (*Plugin)(c) }

// bound applies CallTimeout unless the caller's deadline is sooner, and
// reports whether the deadline is the host's own.
func (c *supervisedConn) bound(ctx context.Context) (context.Context, context.CancelFunc, bool) {
	limit := c.cfg.CallTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= limit {
		ctx, cancel := context.WithCancel(ctx)
		return ctx, cancel, false
	}
	ctx, cancel := context.WithTimeoutCause(ctx, limit, errHostTimeout)
	return ctx, cancel, true
}

var errHostTimeout = errors.New("plugin: call timed out")

// check classifies the error of a call made on inst.
func (c *supervisedConn) check(ctx context.Context, inst *instance, method string, err error, ours bool) error {
	if err == nil {
		return nil
	}
	p := c.plugin()
	switch code := status.Code(err); {
	case code == codes.Unavailable || inst.client.Exited():
		p.fail(inst, fmt.Errorf("%s: %v", method, err))
		return status.Errorf(codes.Unavailable, "plugin %s failed: %v", p.cfg.Label(), status.Convert(err).Message())
	case ours && hostTimedOut(ctx, code):
		why := fmt.Errorf("%s did not answer within %s", method, p.cfg.CallTimeout)
		p.fail(inst, why)
		return status.Errorf(codes.Unavailable, "plugin %s is not answering: %v", p.cfg.Label(), why)
	}
	return err
}

// hostTimedOut reports whether a call bounded by the host's own deadline
// ended because of it. The plugin's side may report the deadline (an
// RST_STREAM) a moment before the host's timer fires, so a DeadlineExceeded
// while the caller's context is still live is the host's too.
func hostTimedOut(ctx context.Context, code codes.Code) bool {
	switch cause := context.Cause(ctx); {
	case cause == errHostTimeout:
		return code == codes.DeadlineExceeded || code == codes.Canceled
	case cause == nil:
		return code == codes.DeadlineExceeded
	default:
		return false // the caller gave up
	}
}

// Invoke implements grpc.ClientConnInterface.
func (c *supervisedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	p := c.plugin()
	inst, err := p.current()
	if err != nil {
		p.log.Warn("Plugin call refused", "method", method, "error", err)
		return err
	}
	ctx, cancel, ours := c.bound(ctx)
	defer cancel()
	err = inst.conn.Invoke(ctx, method, args, reply, opts...)
	return c.check(ctx, inst, method, err, ours)
}

// NewStream implements grpc.ClientConnInterface. The host's deadline
// bounds the whole stream; it ends when the stream does.
func (c *supervisedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p := c.plugin()
	inst, err := p.current()
	if err != nil {
		p.log.Warn("Plugin call refused", "method", method, "error", err)
		return nil, err
	}
	ctx, cancel, ours := c.bound(ctx)
	s, err := inst.conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		cancel()
		return nil, c.check(ctx, inst, method, err, ours)
	}
	return &supervisedStream{ClientStream: s, c: c, ctx: ctx, cancel: cancel, inst: inst, method: method, ours: ours}, nil
}

type supervisedStream struct {
	grpc.ClientStream
	c      *supervisedConn
	ctx    context.Context
	cancel context.CancelFunc
	inst   *instance
	method string
	ours   bool
}

func (s *supervisedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
		if !errors.Is(err, io.EOF) {
			return s.c.check(s.ctx, s.inst, s.method, err, s.ours)
		}
	}
	return err
}

func (s *supervisedStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err != nil && !errors.Is(err, io.EOF) {
		s.cancel()
		return s.c.check(s.ctx, s.inst, s.method, err, s.ours)
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
