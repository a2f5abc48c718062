package azuremsi

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzParsePayload: the payload comes from an unauthenticated agent; no
// input may panic, and every refusal is InvalidArgument.
func FuzzParsePayload(f *testing.F) {
	for _, s := range []string{
		`{"token":"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2ln"}`,
		`{"token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}`,
		`{"token":""}`, `{}`, `[]`, `{"token":"a.b.c.d.e"}`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := parsePayload(b)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code %v", status.Code(err))
			}
			return
		}
		for _, h := range tok.Headers {
			switch h.Algorithm {
			case "none", "HS256", "HS384", "HS512":
				t.Fatalf("accepted algorithm %s", h.Algorithm)
			}
		}
	})
}
