package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/admin/delegatedidentity"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/logging"
)

// The Delegated Identity API is served on the admin socket when
// configured, to callers attested through the socket's pidfd (here, this
// test process, which no entry names), and logs its refusals under its
// own subsystem; without the configuration it is not served.
func TestDelegatedIdentityRegistered(t *testing.T) {
	m, ca := newManager(t)
	c := cache.New(td, nil, nil)
	c.SetBundle(ca.Bundle())
	wl := wltest.NewManager(t, ca)
	h := workloadapi.New(workloadapi.Config{Manager: wl, TrustDomain: td,
		Attestors: []workloadapi.Attestor{unix.New(unix.Config{})}})
	e := serve(t, Config{Manager: m, LogLevel: logging.NewLevel(-4), DelegatedIdentity: &delegatedidentity.Config{
		Manager: wl, Cache: c, Attestor: h, AuthorizedDelegates: []spiffeid.ID{spiffeid.RequireFromPath(td, "/delegate")},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := delegatedidentityv1.NewDelegatedIdentityClient(e.conn).FetchJWTSVIDs(ctx,
		&delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Pid: 1})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "no identity issued" {
		t.Fatalf("got %v, want PermissionDenied \"no identity issued\"", err)
	}
	waitFor(t, "the refusal's log line", func() bool {
		return strings.Contains(e.logs.String(), "subsystem=delegated_identity_api")
	})

	plain := serve(t, Config{Manager: m})
	_, err = delegatedidentityv1.NewDelegatedIdentityClient(plain.conn).FetchJWTSVIDs(ctx,
		&delegatedidentityv1.FetchJWTSVIDsRequest{Audience: []string{"a"}, Pid: 1})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("without DelegatedIdentity: %v, want Unimplemented", err)
	}
}
