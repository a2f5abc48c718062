package sds

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// FuzzRequest feeds arbitrary requests (a DiscoveryRequest in wire form,
// plus newline-separated names and a type URL) to what FetchSecrets and
// StreamSecrets do with them: the caps, the response builder and the
// stream's state machine. Bad input gets InvalidArgument (or SPIRE's
// Internal for ALL without the SPIFFE validator), never a panic, and a
// response echoes the type URL and holds only Secrets that were asked for.
func FuzzRequest(f *testing.F) {
	fx := newFixture(f)
	sel := []*types.Selector{{Type: "unix", Value: "uid:1"}}
	fx.Add(f, "/workload", 1, sel, fedTD.Name())
	upd := fx.Cache.FetchWorkloadUpdate(sel)
	settings := Settings{}.withDefaults()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	seed := func(req *discoveryv3.DiscoveryRequest, names, typeURL string) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, names, typeURL)
	}
	seed(&discoveryv3.DiscoveryRequest{}, "", secretTypeURL)
	seed(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, Node: envoyNode(1, 18, nil)}, "ROOTCA", secretTypeURL)
	seed(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"ALL"}, Node: envoyNode(1, 17, disableMeta(structpb.NewStringValue("false")))}, "", "")
	seed(&discoveryv3.DiscoveryRequest{VersionInfo: "1", ResponseNonce: "abcd0123", Node: envoyNode(1, 30, disableMeta(structpb.NewBoolValue(true)))},
		"spiffe://example.org\nspiffe://other.test\nspiffe://example.org/workload", "type.googleapis.com/envoy.api.v2.auth.Secret")
	seed(&discoveryv3.DiscoveryRequest{}, strings.Repeat("x\n", maxResourceNames+1), "")

	f.Fuzz(func(t *testing.T, raw []byte, names, typeURL string) {
		req := &discoveryv3.DiscoveryRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			req = &discoveryv3.DiscoveryRequest{}
		}
		if names != "" {
			req.ResourceNames = append(req.ResourceNames, strings.Split(names, "\n")...)
		}
		if typeURL != "" {
			req.TypeUrl = typeURL
		}
		if err := checkRequest(req); err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		check := func(resp *discoveryv3.DiscoveryResponse, err error) {
			t.Helper()
			if err != nil {
				if c := status.Code(err); c != codes.InvalidArgument && c != codes.Internal {
					t.Fatalf("failed with %v", err)
				}
				return
			}
			if resp == nil {
				return
			}
			if resp.TypeUrl != req.TypeUrl {
				t.Fatalf("type URL %q, asked with %q", resp.TypeUrl, req.TypeUrl)
			}
			asked := map[string]bool{}
			for _, n := range req.ResourceNames {
				if n != "" {
					asked[n] = true
				}
			}
			for _, s := range decodeSecrets(t, resp) {
				if len(asked) > 0 && !asked[s.GetName()] {
					t.Fatalf("secret %q was not asked for (%q)", s.GetName(), req.ResourceNames)
				}
			}
		}
		check(buildResponse(settings, "", newQuery(req), upd))
		st := newStream(settings, log)
		check(st.onUpdate(upd))
		check(st.onRequest(req))
		// The same request again is a reply to a response only if it
		// happens to echo its nonce; either way it must be handled.
		check(st.onRequest(req))
	})
}
