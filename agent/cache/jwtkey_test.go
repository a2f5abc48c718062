package cache_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
)

// A new JWT authority reaches subscribers (the update's digest covers the
// keys, written without their PKIX form), and a bundle rebuilt with the
// same keys, new objects, does not wake them.
func TestJWTKeyChangeNotifies(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := workloadapitest.NewCA(t, td)
	c := cache.New(td, time.Now, nil)
	id := ca.Issue(t, "/w")
	id.Entry.Selectors = []*types.Selector{{Type: "unix", Value: "uid:1"}}
	c.SetBundle(ca.Bundle())
	c.SetEntries([]*types.Entry{id.Entry})
	c.SetSVIDs(map[string]cache.Identity{id.Entry.Id: id})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := c.Subscribe(ctx, id.Entry.Selectors)
	defer sub.Finish()
	<-sub.Updates()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	with := func(keys ...*ecdsa.PrivateKey) *spiffebundle.Bundle {
		b := ca.Bundle()
		for i, k := range keys {
			// A copy of the public key: same content, another object.
			pub := k.PublicKey
			if err := b.AddJWTAuthority("extra-"+string(rune('a'+i)), &pub); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	c.SetBundle(ca.Bundle())
	select {
	case <-sub.Updates():
		t.Fatal("an identical bundle woke the subscriber")
	case <-time.After(100 * time.Millisecond):
	}
	c.SetBundle(with(key))
	select {
	case u := <-sub.Updates():
		if _, ok := u.Bundle.FindJWTAuthority("extra-a"); !ok {
			t.Fatal("update lacks the new JWT authority")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a new JWT authority did not reach the subscriber")
	}
	c.SetBundle(with(key))
	select {
	case <-sub.Updates():
		t.Fatal("the same JWT authority in new objects woke the subscriber")
	case <-time.After(100 * time.Millisecond):
	}
	other, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.SetBundle(with(other))
	select {
	case <-sub.Updates():
	case <-time.After(10 * time.Second):
		t.Fatal("a JWT authority replaced under the same key ID did not reach the subscriber")
	}
}
