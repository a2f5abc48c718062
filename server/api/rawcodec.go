package api

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// rawMessage is a message already in its wire encoding, which
// serverCodec sends as it is: the entry sync builds its responses from
// the encodings the entry snapshot holds rather than from messages.
type rawMessage []byte

// serverCodec is gRPC's proto codec that also sends rawMessage.
type serverCodec struct{ proto encoding.CodecV2 }

func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return c.proto.Marshal(v)
}

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c serverCodec) Name() string { return c.proto.Name() }

// ServerCodec is the server option every gRPC server that registers the
// API needs: the entry sync sends messages it has encoded itself.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(serverCodec{encoding.GetCodecV2(proto.Name)})
}
