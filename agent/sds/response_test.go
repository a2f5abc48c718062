package sds

import (
	"crypto/x509"
	"regexp"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

func envoyNode(major, minor uint32, meta map[string]*structpb.Value) *corev3.Node {
	n := &corev3.Node{UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
		Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor},
	}}}
	if meta != nil {
		n.Metadata = &structpb.Struct{Fields: meta}
	}
	return n
}

func disableMeta(v *structpb.Value) map[string]*structpb.Value {
	return map[string]*structpb.Value{"disable_spiffe_cert_validation": v}
}

// expect is one resource a response must hold, in order.
type expect struct {
	name string
	// ca names the trust domains whose authorities make up a plain
	// trusted-CA context; spiffe those of a SPIFFE validator config, in
	// order; id the SVID of a TLS certificate.
	ca     string
	spiffe []string
	id     *cache.Identity
}

func TestBuildResponse(t *testing.T) {
	f := newFixture(t)
	caller := []*types.Selector{{Type: "unix", Value: "uid:1"}}
	// second is created first, so it is the caller's default SVID.
	workload := f.Add(t, "/workload", 20, caller, fedTD.Name())
	second := f.Add(t, "/second", 10, caller)
	f.Add(t, "/someone-else", 5, []*types.Selector{{Type: "unix", Value: "uid:2"}})
	upd := f.Cache.FetchWorkloadUpdate(caller)
	nobody := f.Cache.FetchWorkloadUpdate([]*types.Selector{{Type: "unix", Value: "uid:3"}})
	authorities := map[string][]*x509.Certificate{ownTD.Name(): {f.CA.Cert}, fedTD.Name(): {f.Fed.Cert}}

	v18, v17 := envoyNode(1, 18, nil), envoyNode(1, 17, nil)
	for _, tc := range []struct {
		name     string
		settings Settings
		names    []string
		node     *corev3.Node
		upd      *cache.WorkloadUpdate
		want     []expect
		code     codes.Code
		msg      string
	}{
		{name: "no names: everything, SPIFFE validator", node: v18, want: []expect{
			{name: "spiffe://example.org", spiffe: []string{"example.org"}},
			{name: "spiffe://other.test", spiffe: []string{"other.test"}},
			{name: "spiffe://example.org/second", id: &second},
			{name: "spiffe://example.org/workload", id: &workload},
		}},
		{name: "no names, Envoy 1.17: trusted CAs", node: v17, want: []expect{
			{name: "spiffe://example.org", ca: "example.org"},
			{name: "spiffe://other.test", ca: "other.test"},
			{name: "spiffe://example.org/second", id: &second},
			{name: "spiffe://example.org/workload", id: &workload},
		}},
		{name: "no node: SPIFFE validator", names: []string{"spiffe://example.org"},
			want: []expect{{name: "spiffe://example.org", spiffe: []string{"example.org"}}}},
		{name: "node without build version: SPIFFE validator", names: []string{"spiffe://example.org"}, node: &corev3.Node{Id: "envoy"},
			want: []expect{{name: "spiffe://example.org", spiffe: []string{"example.org"}}}},
		{name: "Envoy 2.0", names: []string{"spiffe://example.org"}, node: envoyNode(2, 0, nil),
			want: []expect{{name: "spiffe://example.org", spiffe: []string{"example.org"}}}},
		{name: "own trust domain as ROOTCA", names: []string{"ROOTCA"}, node: v18,
			want: []expect{{name: "ROOTCA", spiffe: []string{"example.org"}}}},
		{name: "ROOTCA, Envoy 1.17", names: []string{"ROOTCA"}, node: v17,
			want: []expect{{name: "ROOTCA", ca: "example.org"}}},
		{name: "federated trust domain", names: []string{"spiffe://other.test"}, node: v17,
			want: []expect{{name: "spiffe://other.test", ca: "other.test"}}},
		{name: "ALL", names: []string{"ALL"}, node: v18,
			want: []expect{{name: "ALL", spiffe: []string{"example.org", "other.test"}}}},
		{name: "ALL, Envoy 1.17", names: []string{"ALL"}, node: v17,
			code: codes.Internal, msg: `unable to use "SPIFFE validator" on Envoy below 1.17`},
		{name: "default is the oldest entry's SVID", names: []string{"default"}, node: v18,
			want: []expect{{name: "default", id: &second}}},
		{name: "SVID by SPIFFE ID", names: []string{"spiffe://example.org/workload"}, node: v18,
			want: []expect{{name: "spiffe://example.org/workload", id: &workload}}},
		{name: "several names, empty ones skipped", names: []string{"default", "", "spiffe://example.org/workload", "ROOTCA"}, node: v18,
			want: []expect{{name: "ROOTCA", spiffe: []string{"example.org"}}, {name: "default", id: &second}, {name: "spiffe://example.org/workload", id: &workload}}},
		{name: "default and the first SVID's ID: the ID wins, default is refused", names: []string{"default", "spiffe://example.org/second"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["default"]`},
		{name: "ROOTCA and ALL: one bundle name per request", names: []string{"ROOTCA", "ALL"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["ALL"]`},
		{name: "another workload's SVID", names: []string{"spiffe://example.org/someone-else", "spiffe://example.org/nope"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["spiffe://example.org/nope" "spiffe://example.org/someone-else"]`},
		{name: "configured names", settings: Settings{DefaultSVIDName: "mine", DefaultBundleName: "trust", DefaultAllBundlesName: "every"},
			names: []string{"mine", "every"}, node: v18,
			want: []expect{{name: "every", spiffe: []string{"example.org", "other.test"}}, {name: "mine", id: &second}}},
		{name: "default names unknown once configured", settings: Settings{DefaultSVIDName: "mine"}, names: []string{"default"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["default"]`},

		{name: "disabled in config", settings: Settings{DisableSPIFFECertValidation: true}, names: []string{"spiffe://example.org"}, node: v18,
			want: []expect{{name: "spiffe://example.org", ca: "example.org"}}},
		{name: "disabled, bundle name ALL: ALL is the own trust domain", settings: Settings{DefaultBundleName: "ALL", DisableSPIFFECertValidation: true},
			names: []string{"ALL"}, node: v18, want: []expect{{name: "ALL", ca: "example.org"}}},
		{name: "disabled by node metadata (bool)", names: []string{"ROOTCA"}, node: envoyNode(1, 18, disableMeta(structpb.NewBoolValue(true))),
			want: []expect{{name: "ROOTCA", ca: "example.org"}}},
		{name: "disabled by node metadata (string)", names: []string{"ROOTCA"}, node: envoyNode(1, 18, disableMeta(structpb.NewStringValue("true"))),
			want: []expect{{name: "ROOTCA", ca: "example.org"}}},
		{name: "node metadata false", names: []string{"ROOTCA"}, node: envoyNode(1, 18, disableMeta(structpb.NewStringValue("false"))),
			want: []expect{{name: "ROOTCA", spiffe: []string{"example.org"}}}},
		{name: "node metadata not a boolean: as if absent", names: []string{"ROOTCA"}, node: envoyNode(1, 18, disableMeta(structpb.NewStringValue("yes please"))),
			want: []expect{{name: "ROOTCA", spiffe: []string{"example.org"}}}},
		{name: "config disabled, node opts in (bool)", settings: Settings{DisableSPIFFECertValidation: true}, names: []string{"ROOTCA"},
			node: envoyNode(1, 18, disableMeta(structpb.NewBoolValue(false))), want: []expect{{name: "ROOTCA", spiffe: []string{"example.org"}}}},
		{name: "config disabled, node metadata of another type", settings: Settings{DisableSPIFFECertValidation: true}, names: []string{"ROOTCA"},
			node: envoyNode(1, 18, disableMeta(structpb.NewNumberValue(0))), want: []expect{{name: "ROOTCA", ca: "example.org"}}},
		{name: "opting in does not help Envoy 1.17", names: []string{"ROOTCA"}, node: envoyNode(1, 17, disableMeta(structpb.NewBoolValue(false))),
			want: []expect{{name: "ROOTCA", ca: "example.org"}}},

		{name: "caller without entry: no names gives the bundle only", upd: nobody, node: v18,
			want: []expect{{name: "spiffe://example.org", spiffe: []string{"example.org"}}}},
		{name: "caller without entry: ROOTCA", upd: nobody, names: []string{"ROOTCA"}, node: v18,
			want: []expect{{name: "ROOTCA", spiffe: []string{"example.org"}}}},
		{name: "caller without entry: no default SVID", upd: nobody, names: []string{"default"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["default"]`},
		{name: "caller without entry: no federated bundle", upd: nobody, names: []string{"spiffe://other.test"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["spiffe://other.test"]`},
		{name: "no bundle yet", upd: &cache.WorkloadUpdate{}, names: []string{"ROOTCA"}, node: v18,
			code: codes.InvalidArgument, msg: `workload is not authorized for the requested identities ["ROOTCA"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.upd
			if u == nil {
				u = upd
			}
			req := &discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: tc.names, Node: tc.node}
			resp, err := buildResponse(tc.settings.withDefaults(), "", newQuery(req), u)
			if tc.code != codes.OK {
				if status.Code(err) != tc.code || status.Convert(err).Message() != tc.msg {
					t.Fatalf("got %v, want %v %q", err, tc.code, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.TypeUrl != secretTypeURL || resp.VersionInfo != "" || resp.Nonce != "" {
				t.Fatalf("type %q version %q nonce %q: a fetch has the request's type and no version or nonce", resp.TypeUrl, resp.VersionInfo, resp.Nonce)
			}
			secrets := decodeSecrets(t, resp)
			if len(secrets) != len(tc.want) {
				t.Fatalf("secrets %q, want %d", secretNames(secrets), len(tc.want))
			}
			for i, w := range tc.want {
				switch s := secrets[i]; {
				case w.id != nil:
					checkTLSCertificate(t, s, w.name, *w.id)
				case w.ca != "":
					if got := trustedCA(t, s, w.name); !slices.EqualFunc(got, authorities[w.ca], (*x509.Certificate).Equal) {
						t.Fatalf("%s: trusted CAs are not %s's", w.name, w.ca)
					}
				default:
					order, tds := spiffeValidator(t, s, w.name)
					if !slices.Equal(order, w.spiffe) {
						t.Fatalf("%s: trust domains %v, want %v", w.name, order, w.spiffe)
					}
					for _, td := range order {
						if !slices.EqualFunc(tds[td], authorities[td], (*x509.Certificate).Equal) {
							t.Fatalf("%s: trust bundle of %s is not its CA's", w.name, td)
						}
					}
				}
			}
		})
	}
}

func TestStreamedResponseHasVersionAndNonce(t *testing.T) {
	f := newFixture(t)
	upd := f.Cache.FetchWorkloadUpdate(nil)
	q := newQuery(&discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL})
	seen := map[string]bool{}
	for range 20 {
		resp, err := buildResponse(Settings{}.withDefaults(), "7", q, upd)
		if err != nil {
			t.Fatal(err)
		}
		if resp.VersionInfo != "7" || !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(resp.Nonce) {
			t.Fatalf("version %q nonce %q", resp.VersionInfo, resp.Nonce)
		}
		seen[resp.Nonce] = true
	}
	if len(seen) < 19 {
		t.Fatalf("only %d distinct nonces in 20 responses", len(seen))
	}
}

func TestCheckRequest(t *testing.T) {
	long := string(make([]byte, maxNameLength+1))
	for _, tc := range []struct {
		name string
		req  *discoveryv3.DiscoveryRequest
		msg  string
	}{
		{"at the caps", &discoveryv3.DiscoveryRequest{ResourceNames: make([]string, maxResourceNames), TypeUrl: string(make([]byte, maxTypeURLLength))}, ""},
		{"too many names", &discoveryv3.DiscoveryRequest{ResourceNames: make([]string, maxResourceNames+1)}, "too many resource names: 65 (at most 64 per request)"},
		{"long name", &discoveryv3.DiscoveryRequest{ResourceNames: []string{"a", long}}, "resource name of 2049 bytes (at most 2048)"},
		{"long type URL", &discoveryv3.DiscoveryRequest{TypeUrl: long[:maxTypeURLLength+1]}, "type URL of 257 bytes (at most 256)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRequest(tc.req)
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != tc.msg {
				t.Fatalf("got %v, want InvalidArgument %q", err, tc.msg)
			}
		})
	}
}
