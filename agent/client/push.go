package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe-hw/spire-hw/wire/push"
)

// ErrConnectionRetired ends WatchChanges when the connection it ran on was
// replaced (a renewed SVID); the next call uses the new one.
var ErrConnectionRetired = errors.New("client: notice stream: connection retired")

// WatchChanges opens the server's notice stream (wire/push) on the
// agent's mTLS connection and calls notify with each notice, the first
// being push.Open, until ctx ends, the stream fails, or the connection is
// retired (a renewed SVID: call again to follow it). notify runs on the
// caller's goroutine and should not block. A server without the service
// (SPIRE's) fails it with codes.Unimplemented; the error is the stream's
// gRPC status, wrapped.
func (c *Client) WatchChanges(ctx context.Context, notify func(push.Change)) error {
	conn, connCtx, err := c.agentConnCtx()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(connCtx, cancel)
	defer stop()
	st, err := push.Subscribe(ctx, conn)
	if err != nil {
		if connCtx.Err() != nil {
			return ErrConnectionRetired
		}
		return fmt.Errorf("client: notice stream: %w", err)
	}
	for {
		ch, err := st.Recv()
		if err != nil {
			if connCtx.Err() != nil {
				return ErrConnectionRetired
			}
			return fmt.Errorf("client: notice stream: %w", err)
		}
		notify(ch)
	}
}
