package workloadapi

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// FuzzJWTRequests sends arbitrary JWT requests from a workload (this
// process, attested by the unix attestor) to the Workload API handler on a
// real Unix socket: FetchJWTSVID with any audiences and requested SPIFFE
// ID, then ValidateJWTSVID with any audience, both of the token just
// issued and of a token edited from a real one. The handler must answer
// each with what the request earns and nothing else:
//   - FetchJWTSVID: InvalidArgument for no audience or a malformed ID,
//     PermissionDenied for an ID the caller has no identity for, and
//     otherwise one token per matching identity, for that identity and
//     exactly the audiences asked, that go-spiffe validates;
//   - ValidateJWTSVID: InvalidArgument for a missing field or a token
//     go-spiffe refuses, and for one it accepts the same subject it
//     finds; the token just issued passes exactly for the audiences it
//     was issued to.
func FuzzJWTRequests(f *testing.F) {
	ca := wltest.NewCA(f, td)
	mgr := wltest.NewManager(signerTB{f}, ca)
	uid := &types.Selector{Type: "unix", Value: "uid:" + strconv.Itoa(os.Geteuid())}
	ours := []string{"spiffe://example.org/w1", "spiffe://example.org/w2"}
	for _, id := range ours {
		mgr.Set(ca.Issue(f, strings.TrimPrefix(id, "spiffe://example.org")), uid)
	}
	// Another uid's identity: never this caller's.
	mgr.Set(ca.Issue(f, "/other"), &types.Selector{Type: "unix", Value: "uid:54321"})
	h := New(Config{Manager: mgr, Attestors: []Attestor{unix.New(unix.Config{})}, TrustDomain: td, Log: quietLog()})
	conn, err := grpc.NewClient("unix://"+startServer(f, h), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	client := workload.NewSpiffeWorkloadAPIClient(conn)
	bundles := jwtbundle.NewSet(ca.Bundle().JWTBundle())

	foreign := wltest.SignJWT(f, ca.JWTKey, ca.JWTKID, spiffeid.RequireFromString("spiffe://example.org/w1"), []string{"db"}, nil)
	// Tokens are edits of a real one (one cut and one insertion), so that
	// inputs stay small enough for the fuzzer to minimize over a socket;
	// FuzzValidateJWT feeds raw tokens to the validation itself.
	f.Add("db", "", "db", uint8(0), uint16(0), "")
	f.Add("db|cache", "spiffe://example.org/w2", "cache", uint8(1), uint16(12), "x")
	f.Add("", "", "db", uint8(2), uint16(0), "")
	f.Add("db", "spiffe://example.org/other", "", uint8(0), uint16(3), "a.b.c")
	f.Add("db", "spiffe://Example.org/w1", "x", uint8(1), uint16(40), ".")
	f.Add("|", "spiffe://example.org/w1/", "", uint8(2), uint16(0), "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93MSJ9.")
	f.Fuzz(func(t *testing.T, aud, spiffeID, validateAud string, base uint8, at uint16, insert string) {
		for _, s := range []string{aud, spiffeID, validateAud, insert} {
			if !utf8.ValidString(s) {
				return // not a protobuf string: gRPC refuses the message
			}
		}
		var auds []string
		if aud != "" {
			auds = strings.Split(aud, "|")
		}
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 30*time.Second)
		defer cancel()

		resp, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: auds, SpiffeId: spiffeID})
		issued := ""
		_, idErr := spiffeid.FromString(spiffeID)
		switch {
		case len(auds) == 0 || (spiffeID != "" && idErr != nil):
			wantFuzzCode(t, "FetchJWTSVID", err, codes.InvalidArgument)
		case spiffeID != "" && !slices.Contains(ours, spiffeID):
			wantFuzzCode(t, "FetchJWTSVID", err, codes.PermissionDenied)
		case err != nil:
			t.Fatalf("FetchJWTSVID(%q, %q): %v", auds, spiffeID, err)
		default:
			want := ours
			if spiffeID != "" {
				want = []string{spiffeID}
			}
			if len(resp.Svids) != len(want) {
				t.Fatalf("FetchJWTSVID(%q, %q): %d SVIDs, want %d", auds, spiffeID, len(resp.Svids), len(want))
			}
			for _, s := range resp.Svids {
				svid, err := jwtsvid.ParseAndValidate(s.Svid, bundles, auds[:1])
				if err != nil {
					t.Fatalf("issued token does not validate with go-spiffe: %v", err)
				}
				if !slices.Contains(want, s.SpiffeId) || svid.ID.String() != s.SpiffeId || !sameSet(svid.Audience, auds) {
					t.Fatalf("asked %q for %q, got a token for %s (%s) with audience %q", auds, spiffeID, s.SpiffeId, svid.ID, svid.Audience)
				}
			}
			// The token just issued, validated for an arbitrary audience.
			issued = resp.Svids[0].Svid
			vr, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: validateAud, Svid: issued})
			switch {
			case validateAud != "" && slices.Contains(auds, validateAud):
				if err != nil || vr.SpiffeId != resp.Svids[0].SpiffeId {
					t.Fatalf("ValidateJWTSVID of a token issued for %q, audience %q: %v, %v", auds, validateAud, vr, err)
				}
			default:
				wantFuzzCode(t, "ValidateJWTSVID (issued token, other audience)", err, codes.InvalidArgument)
			}
		}

		// An edited token: accepted exactly when go-spiffe accepts it.
		token := []string{foreign, issued, ""}[base%3]
		i := min(int(at), len(token))
		token = token[:i] + insert + token[min(i+int(at%7), len(token)):]
		vr, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: validateAud, Svid: token})
		if validateAud == "" || token == "" {
			wantFuzzCode(t, "ValidateJWTSVID (missing field)", err, codes.InvalidArgument)
			return
		}
		svid, verr := jwtsvid.ParseAndValidate(token, bundles, []string{validateAud})
		switch {
		case verr != nil:
			wantFuzzCode(t, "ValidateJWTSVID (token go-spiffe refuses)", err, codes.InvalidArgument)
		case err != nil || vr.SpiffeId != svid.ID.String():
			t.Fatalf("ValidateJWTSVID of a token go-spiffe accepts for %s: %v, %v", svid.ID, vr, err)
		}
	})
}

// signerTB is the F for the test manager, which signs JWT-SVIDs while the
// fuzz target runs, where F.Helper panics: Helper does nothing, and a
// signing failure (Fatal) still fails the run, as a panic in the handler.
type signerTB struct{ testing.TB }

func (signerTB) Helper() {}

func wantFuzzCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %v", what, err, code)
	}
}

// sameSet reports whether a and b hold the same strings, ignoring order
// and repeats.
func sameSet(a, b []string) bool {
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	for _, s := range b {
		if !slices.Contains(a, s) {
			return false
		}
	}
	return true
}
