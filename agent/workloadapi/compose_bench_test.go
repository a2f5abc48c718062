package workloadapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
)

// benchCache is a real agent cache with ten entries, one of which the
// selector uid:0 matches.
func benchCache(b *testing.B) *cache.Cache {
	ca := wltest.NewCA(b, td)
	c := cache.New(td, time.Now, nil)
	var entries []*types.Entry
	svids := map[string]cache.Identity{}
	for i := range 10 {
		id := ca.Issue(b, fmt.Sprintf("/workload/%d", i))
		id.Entry.Selectors = []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}}
		entries = append(entries, id.Entry)
		svids[id.Entry.Id] = id
	}
	c.SetBundle(ca.Bundle())
	c.SetEntries(entries)
	c.SetSVIDs(svids)
	return c
}

var benchSelectors = []*types.Selector{{Type: "unix", Value: "uid:0"}, {Type: "unix", Value: "user:root"}, {Type: "unix", Value: "gid:0"}, {Type: "unix", Value: "group:root"}}

// BenchmarkSubscribe is what a new FetchX509SVID stream asks of the cache.
func BenchmarkSubscribe(b *testing.B) {
	c := benchCache(b)
	for b.Loop() {
		s := c.Subscribe(context.Background(), benchSelectors)
		<-s.Updates()
		s.Finish()
	}
}

// BenchmarkComposeX509 is building and marshalling the first response.
func BenchmarkComposeX509(b *testing.B) {
	c := benchCache(b)
	u := c.FetchWorkloadUpdate(benchSelectors)
	for b.Loop() {
		resp, err := composeX509SVIDResponse(u, filterIdentities(u.Identities))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(resp); err != nil {
			b.Fatal(err)
		}
	}
}

// The response is the bytes it was before the cache held DER: each SVID's
// chain as the certificates' concatenated DER, its key as Go's PKCS#8 of
// the key, the entry's SPIFFE ID and hint, the bundle's authorities.
func TestComposeX509SendsTheSVIDsBytes(t *testing.T) {
	ca := wltest.NewCA(t, td)
	fed := wltest.NewCA(t, spiffeid.RequireTrustDomainFromString("fed.test"))
	u := &cache.WorkloadUpdate{Bundle: ca.Bundle(), FederatedBundles: map[spiffeid.TrustDomain]*spiffebundle.Bundle{fed.TD: fed.Bundle()}}
	for i := range 3 {
		id := ca.Issue(t, fmt.Sprintf("/w/%d", i))
		id.Entry.Hint = fmt.Sprintf("hint-%d", i)
		u.Identities = append(u.Identities, id)
	}
	got, err := composeX509SVIDResponse(u, u.Identities)
	if err != nil {
		t.Fatal(err)
	}
	raw := func(certs []*x509.Certificate) []byte {
		var out []byte
		for _, c := range certs {
			out = append(out, c.Raw...)
		}
		return out
	}
	want := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{"spiffe://fed.test": raw(fed.Bundle().X509Authorities())}}
	for _, id := range u.Identities {
		certs, err := id.SVID.ParseCertificates()
		if err != nil {
			t.Fatal(err)
		}
		signer, err := id.SVID.Signer()
		if err != nil {
			t.Fatal(err)
		}
		key, err := x509.MarshalPKCS8PrivateKey(signer)
		if err != nil {
			t.Fatal(err)
		}
		want.Svids = append(want.Svids, &workload.X509SVID{
			SpiffeId:    "spiffe://" + id.Entry.SpiffeId.TrustDomain + id.Entry.SpiffeId.Path,
			X509Svid:    raw(certs),
			X509SvidKey: key,
			Bundle:      raw(ca.Bundle().X509Authorities()),
			Hint:        id.Entry.Hint,
		})
	}
	det := proto.MarshalOptions{Deterministic: true}
	gotB, err := det.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wantB, err := det.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotB, wantB) {
		t.Fatalf("response differs:\n got %v\nwant %v", got, want)
	}
}
