package gcpiit

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzParsePayload: the payload is a token from an unauthenticated agent;
// no input may panic, refusals are InvalidArgument and only RS256 with a
// key ID gets through.
func FuzzParsePayload(f *testing.F) {
	for _, s := range []string{
		"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJ4In0.c2ln",
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
		"eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.c2ln",
		"a.b.c", "", "\x00", "...",
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
		if len(tok.Headers) != 1 || tok.Headers[0].Algorithm != string(jose.RS256) || tok.Headers[0].KeyID == "" {
			t.Fatalf("accepted header %+v", tok.Headers)
		}
	})
}
