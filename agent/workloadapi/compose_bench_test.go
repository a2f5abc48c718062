package workloadapi

import (
	"context"
	"fmt"
	"testing"
	"time"

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
