package fleet

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// TestFleetSyncs attests three simulated agents against a real server,
// registers two entries for each and checks that every agent's sync loop
// signs exactly its own SVIDs and keeps reporting sync latencies.
func TestFleetSyncs(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	f := New(Server{Addr: srv.Addr, Bundle: srv.Bundle(t)}, 200*time.Millisecond)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []spiffeid.ID
	for range 3 {
		id, err := f.Add(ctx, srv.CreateToken(t))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var entries []*types.Entry
	for i, id := range ids {
		for j := range 2 {
			entries = append(entries, &types.Entry{
				ParentId:  &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
				SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d/%d", i, j)},
				Selectors: []*types.Selector{{Type: "unix", Value: "uid:0"}},
			})
		}
	}
	if _, err := entryv1.NewEntryClient(srv.Admin(t)).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries}); err != nil {
		t.Fatal(err)
	}
	for f.Held() < 6 {
		if ctx.Err() != nil {
			t.Fatalf("fleet holds %d SVIDs, want 6", f.Held())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if h := f.Held(); h != 6 {
		t.Errorf("fleet holds %d SVIDs, want 6", h)
	}
	lat, failed, err := f.Collect()
	if failed != 0 {
		t.Errorf("%d syncs failed, last: %v", failed, err)
	}
	// Three agents for over a second at 200 ms: at least a dozen syncs.
	if len(lat) < 12 {
		t.Errorf("%d syncs recorded, want at least 12", len(lat))
	}
	if lat2, _, _ := f.Collect(); len(lat2) > 3 {
		t.Errorf("Collect did not reset: %d syncs right after", len(lat2))
	}
}

// TestCollectWindow: a sync that started before Collect (say, one that a
// pause stretched) is not counted in the next window, success or failure;
// one that started after it is.
func TestCollectWindow(t *testing.T) {
	f := New(Server{}, time.Second)
	defer f.Close()
	before := time.Now()
	f.Collect()
	f.record(before, time.Second, nil)
	f.record(before, time.Second, errors.New("in flight"))
	f.record(time.Now(), time.Millisecond, nil)
	f.record(time.Now(), time.Millisecond, errors.New("refused"))
	lat, failed, err := f.Collect()
	if len(lat) != 1 || lat[0] != time.Millisecond {
		t.Errorf("latencies %v, want just the sync started in the window", lat)
	}
	if failed != 1 || err == nil || err.Error() != "refused" {
		t.Errorf("failed %d (%v), want the one failure of the window", failed, err)
	}
}

// TestAddRejected: a token the server never issued, or one already used,
// attests nothing and leaves the fleet unchanged.
func TestAddRejected(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	f := New(Server{Addr: srv.Addr, Bundle: srv.Bundle(t)}, time.Second)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	used := srv.CreateToken(t)
	if _, err := f.Add(ctx, used); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, token string }{
		{"unknown token", "not-a-token"},
		{"reused token", used},
	} {
		if _, err := f.Add(ctx, tc.token); err == nil {
			t.Errorf("%s: attested", tc.name)
		}
	}
	if f.Len() != 1 {
		t.Errorf("fleet has %d agents, want 1", f.Len())
	}
}
