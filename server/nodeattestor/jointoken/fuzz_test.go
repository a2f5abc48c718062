package jointoken

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzAgentID: the token comes from an unauthenticated agent and becomes a
// path segment of its SPIFFE ID; it must never escape that segment.
func FuzzAgentID(f *testing.F) {
	for _, s := range []string{"c9d231b7-37a9-321a-799e-6b8af7994355", "../server", "a/b", "", ".", "%2e%2e", "x\x00y"} {
		f.Add(s)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, token string) {
		id, err := AgentID(td, token)
		if err != nil {
			return
		}
		want := "/spire/agent/join_token/" + token
		if id.Path() != want || strings.Count(id.Path(), "/") != 4 || token == "." || token == ".." {
			t.Fatalf("token %q gave agent ID %s", token, id)
		}
	})
}
