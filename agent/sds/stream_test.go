package sds

import (
	"io"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// streamFixture drives a stream's state machine with a real cache's
// updates, as StreamSecrets does, without the transport.
type streamFixture struct {
	t   *testing.T
	f   *fixture
	st  *stream
	sel []*types.Selector
}

func newStreamFixture(t *testing.T) *streamFixture {
	f := newFixture(t)
	sel := []*types.Selector{{Type: "unix", Value: "uid:1"}}
	f.Add(t, "/workload", 1, sel)
	return &streamFixture{t: t, f: f, st: newStream(Settings{}.withDefaults(), slog.New(slog.NewTextHandler(io.Discard, nil))), sel: sel}
}

func (sf *streamFixture) update() *discoveryv3.DiscoveryResponse {
	sf.t.Helper()
	resp, err := sf.st.onUpdate(sf.f.Cache.FetchWorkloadUpdate(sf.sel))
	if err != nil {
		sf.t.Fatal(err)
	}
	return resp
}

func (sf *streamFixture) request(req *discoveryv3.DiscoveryRequest) *discoveryv3.DiscoveryResponse {
	sf.t.Helper()
	resp, err := sf.st.onRequest(req)
	if err != nil {
		sf.t.Fatal(err)
	}
	return resp
}

// want fails unless resp is a response of version with these secrets.
func (sf *streamFixture) want(resp *discoveryv3.DiscoveryResponse, version string, names ...string) {
	sf.t.Helper()
	if resp == nil {
		sf.t.Fatalf("no response, want version %s with %q", version, names)
	}
	got := secretNames(decodeSecrets(sf.t, resp))
	if resp.VersionInfo != version || len(got) != len(names) {
		sf.t.Fatalf("version %s with %q, want version %s with %q", resp.VersionInfo, got, version, names)
	}
	for i := range names {
		if got[i] != names[i] {
			sf.t.Fatalf("secrets %q, want %q", got, names)
		}
	}
}

func (sf *streamFixture) none(resp *discoveryv3.DiscoveryResponse, why string) {
	sf.t.Helper()
	if resp != nil {
		sf.t.Fatalf("%s: got a response (version %s, %q)", why, resp.VersionInfo, secretNames(decodeSecrets(sf.t, resp)))
	}
}

func ask(names ...string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: names}
}

func reply(to *discoveryv3.DiscoveryResponse, version string, names ...string) *discoveryv3.DiscoveryRequest {
	r := ask(names...)
	r.ResponseNonce, r.VersionInfo = to.Nonce, version
	return r
}

func TestStreamUpdateBeforeRequest(t *testing.T) {
	sf := newStreamFixture(t)
	sf.none(sf.update(), "nothing asked yet")
	sf.want(sf.request(ask("default")), "1", "default")
}

func TestStreamRequestBeforeUpdate(t *testing.T) {
	sf := newStreamFixture(t)
	sf.none(sf.request(ask("default")), "no workload update yet")
	sf.want(sf.update(), "1", "default")
}

func TestStreamACKThenPush(t *testing.T) {
	sf := newStreamFixture(t)
	sf.update()
	r1 := sf.request(ask("default"))
	sf.want(r1, "1", "default")
	sf.none(sf.request(reply(r1, "1", "default")), "ACK of the same names")
	r2 := sf.update()
	sf.want(r2, "2", "default")
	if r2.Nonce == r1.Nonce {
		t.Fatal("the pushed response reuses the nonce")
	}
	if r2.TypeUrl != secretTypeURL {
		t.Fatalf("pushed response type %q", r2.TypeUrl)
	}
}

func TestStreamNACKIsNotAnsweredWithTheSameVersion(t *testing.T) {
	sf := newStreamFixture(t)
	sf.update()
	r1 := sf.request(ask("default"))
	nack := reply(r1, "", "default")
	nack.ErrorDetail = &rpcstatus.Status{Message: "cannot load certificate"}
	sf.none(sf.request(nack), "NACK of the same names")
	// Nor when it names a version it never had.
	nack2 := reply(r1, "OHNO", "default")
	sf.none(sf.request(nack2), "NACK with another version")
	// The next update is sent as usual.
	sf.want(sf.update(), "2", "default")
}

func TestStreamNACKWithOtherNamesIsAnswered(t *testing.T) {
	sf := newStreamFixture(t)
	sf.update()
	r1 := sf.request(ask("default"))
	nack := reply(r1, "", "ROOTCA")
	nack.ErrorDetail = &rpcstatus.Status{Message: "wrong secret"}
	sf.want(sf.request(nack), "1", "ROOTCA")
}

func TestStreamStaleNonceIgnored(t *testing.T) {
	sf := newStreamFixture(t)
	sf.update()
	r1 := sf.request(ask("default"))
	r2 := sf.update() // pushed before the client answered r1
	sf.want(r2, "2", "default")
	sf.none(sf.request(reply(r1, "1", "ROOTCA")), "a reply to an earlier response")
	stale := reply(r1, "1", "ROOTCA")
	stale.ResponseNonce = "not-a-nonce"
	sf.none(sf.request(stale), "an unknown nonce")
	// The ignored request did not replace the names: the next push is
	// still for "default", and a reply to r2 with new names is answered.
	sf.want(sf.request(reply(r2, "2", "ROOTCA")), "2", "ROOTCA")
	sf.want(sf.update(), "3", "ROOTCA")
}

func TestStreamNamesChangeOnACK(t *testing.T) {
	sf := newStreamFixture(t)
	sf.update()
	r1 := sf.request(ask("default"))
	sf.want(sf.request(reply(r1, "1", "default", "ROOTCA")), "1", "ROOTCA", "default")
}

func TestStreamKeepsNode(t *testing.T) {
	sf := newStreamFixture(t)
	sf.update()
	first := ask("ROOTCA")
	first.Node = envoyNode(1, 17, nil)
	r1 := sf.request(first)
	// A later request without a node is read with the last one's: still
	// an Envoy without the SPIFFE validator, so ALL is refused.
	_, err := sf.st.onRequest(reply(r1, "1", "ALL"))
	if err == nil {
		t.Fatal("ALL served to an Envoy 1.17 whose node was sent only in its first request")
	}
	// A node sent again takes over.
	sf2 := newStreamFixture(t)
	sf2.update()
	r1 = sf2.request(first)
	again := reply(r1, "1", "ALL")
	again.Node = &corev3.Node{Id: "envoy"}
	sf2.want(sf2.request(again), "1", "ALL")
}
