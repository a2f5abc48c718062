// Package push is the wire contract of spire-hw's change notices: a
// server-streaming RPC on which our server tells one of our agents that
// its authorized entries or the trust bundle changed, so that the agent
// syncs at once instead of at its next poll.
//
// It is our own service (spirehw.push.v1.Notices), not part of SPIRE's
// API: SPIRE's agents never call it, and SPIRE's server answers
// Unimplemented, on which our agent keeps polling. A notice carries no
// entries or bundles, only which of them changed; the agent fetches them
// with SPIRE's own RPCs, so the stream discloses nothing a sync would not.
//
// There is no .proto file: the messages are protobuf's well-known
// google.protobuf.Empty (the request) and google.protobuf.UInt32Value (a
// notice, a bit set of Change), and the service is described by hand.
package push

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the gRPC service name.
const ServiceName = "spirehw.push.v1.Notices"

// SubscribeMethod is the full method name of the notice stream, as
// interceptors see it.
const SubscribeMethod = "/" + ServiceName + "/Subscribe"

// Change says what a notice is about; a notice may name several.
type Change uint32

const (
	// Entries: the agent's authorized entries changed.
	Entries Change = 1 << iota
	// Bundle: the trust domain's bundle changed.
	Bundle
	// FederatedBundles: the bundle of a foreign trust domain that one of
	// the agent's entries federates with changed. Added after Entries and
	// Bundle: an agent that predates it reads it as an unknown bit, which
	// ParseNotice has always turned into "everything changed", so such an
	// agent syncs in full, which fetches the federated bundles too.
	FederatedBundles

	// known is every bit this version defines.
	known = Entries | Bundle | FederatedBundles
)

// Open is the first notice of every stream (no bits set): the stream is
// established, and the agent syncs once to close the gap between its last
// sync and the subscription.
const Open Change = 0

// MaxNoticeSize bounds an encoded notice: a UInt32Value is at most 6 bytes.
const MaxNoticeSize = 16

// Has says whether c names all of what.
func (c Change) Has(what Change) bool { return c&what == what }

func (c Change) String() string {
	if c == Open {
		return "open"
	}
	if c&^known != 0 {
		return fmt.Sprintf("Change(%#x)", uint32(c))
	}
	var names []string
	for _, b := range []struct {
		bit  Change
		name string
	}{{Entries, "entries"}, {Bundle, "bundle"}, {FederatedBundles, "federated_bundles"}} {
		if c.Has(b.bit) {
			names = append(names, b.name)
		}
	}
	return strings.Join(names, "|")
}

// Notice encodes c as the stream's message.
func Notice(c Change) *wrapperspb.UInt32Value { return wrapperspb.UInt32(uint32(c)) }

// ParseNotice reads a received notice. Bits this version does not know are
// kept out of the answer but make it name everything: a newer server has
// something to say, and a full sync is always a correct response.
func ParseNotice(m *wrapperspb.UInt32Value) (Change, error) {
	if m == nil {
		return 0, errors.New("push: nil notice")
	}
	c := Change(m.GetValue())
	if c&^known != 0 {
		return known, nil
	}
	return c, nil
}

// DecodeNotice parses an encoded notice, as the gRPC codec would, with the
// size bound applied first.
func DecodeNotice(b []byte) (Change, error) {
	if len(b) > MaxNoticeSize {
		return 0, fmt.Errorf("push: notice of %d bytes, at most %d", len(b), MaxNoticeSize)
	}
	m := new(wrapperspb.UInt32Value)
	if err := proto.Unmarshal(b, m); err != nil {
		return 0, fmt.Errorf("push: notice: %w", err)
	}
	return ParseNotice(m)
}

// Server is the service's server side. Subscribe receives the request
// itself (an Empty) and then sends Notice messages on stream until the
// stream or the subscription ends.
type Server interface {
	Subscribe(stream grpc.ServerStream) error
}

// RegisterServer adds the service to s.
func RegisterServer(s grpc.ServiceRegistrar, srv Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*Server)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Subscribe",
			ServerStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
					return err
				}
				return srv.(Server).Subscribe(stream)
			},
		}},
		Metadata: "spirehw/push/v1/push.proto",
	}, srv)
}

var subscribeDesc = &grpc.StreamDesc{StreamName: "Subscribe", ServerStreams: true}

// Stream is the client side of one subscription.
type Stream struct{ s grpc.ClientStream }

// Subscribe opens a notice stream on cc; the stream lives as long as ctx.
// A server without the service fails the first Recv (or this call) with
// codes.Unimplemented.
func Subscribe(ctx context.Context, cc grpc.ClientConnInterface) (*Stream, error) {
	s, err := cc.NewStream(ctx, subscribeDesc, SubscribeMethod, grpc.MaxCallRecvMsgSize(MaxNoticeSize))
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(new(emptypb.Empty)); err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	return &Stream{s: s}, nil
}

// Recv waits for the next notice.
func (s *Stream) Recv() (Change, error) {
	m := new(wrapperspb.UInt32Value)
	if err := s.s.RecvMsg(m); err != nil {
		return 0, err
	}
	return ParseNotice(m)
}
