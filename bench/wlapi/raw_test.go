package wlapi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawRequest is everything a client sends for FetchX509SVID on a new
// connection: the HTTP/2 preface, empty SETTINGS, the request's HEADERS
// (with the Workload API's security header) and its DATA (an empty
// X509SVIDRequest) ending the stream. Built once, so that a call costs the
// client one write.
func rawRequest() []byte {
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", "/SpiffeWorkloadAPI/FetchX509SVID"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"},
		{"workload.spiffe.io", "true"},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			panic(err)
		}
	}
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	if err := fr.WriteSettings(); err != nil {
		panic(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr.Bytes(), EndHeaders: true}); err != nil {
		panic(err)
	}
	// gRPC message framing: not compressed, length 0.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// rawFetch opens a new connection to the Workload API socket, sends req and
// reads frames until the first response message on stream 1 is complete.
// It returns the time from before the dial to the last byte of that
// message and the message (protobuf bytes, for a check that it holds an
// SVID). A RST_STREAM or GOAWAY fails the call.
func rawFetch(socket string, req []byte) (time.Duration, []byte, error) {
	start := time.Now()
	c, err := net.Dial("unix", socket)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(30 * time.Second))
	if _, err := c.Write(req); err != nil {
		return 0, nil, err
	}
	fr := http2.NewFramer(io.Discard, c)
	var msg []byte
	want := -1
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, nil, err
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			if f.StreamID != 1 {
				continue
			}
			msg = append(msg, f.Data()...)
			if want < 0 && len(msg) >= 5 {
				want = 5 + int(binary.BigEndian.Uint32(msg[1:5]))
			}
			if want >= 0 && len(msg) >= want {
				return time.Since(start), msg[5:want], nil
			}
		case *http2.RSTStreamFrame:
			return 0, nil, fmt.Errorf("RST_STREAM %v", f.ErrCode)
		case *http2.GoAwayFrame:
			return 0, nil, fmt.Errorf("GOAWAY %v", f.ErrCode)
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return 0, nil, errors.New("stream ended without a message (trailers only: an error status)")
			}
		}
	}
}
