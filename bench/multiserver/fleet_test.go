package multiserver

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/sim/fleet"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

// fleetSizes are the server counts compared; the first is the baseline.
var fleetSizes = []int{1, 2, 3}

// fleetRound is one measurement of a fleet against n servers.
type fleetRound struct {
	servers        int
	syncsPerSecond float64
	p50, p99       time.Duration
	failed         int
}

var (
	fleetMu     sync.Mutex
	fleetRounds []fleetRound
)

const entriesPerAgent = 10

// maxOpenConns is each server's share of PostgreSQL's 100 connections.
const maxOpenConns = 30

func fleetAgents() int           { return pick(300, 12) }
func fleetWindow() time.Duration { return time.Duration(pick(10, 1)) * time.Second }

// TestFleetServers spreads one closed-loop fleet (every agent syncs again
// as soon as its last sync ended, so the figure is what the servers and
// their database can answer) over one, two and three servers sharing a
// fresh PostgreSQL database, rounds rotating the order.
func TestFleetServers(t *testing.T) {
	for r := range pick(3, 1) {
		for k := range fleetSizes {
			n := fleetSizes[(k+r)%len(fleetSizes)]
			t.Run(fmt.Sprintf("round%d/servers%d", r, n), func(t *testing.T) {
				res := runFleet(t, n)
				fleetMu.Lock()
				fleetRounds = append(fleetRounds, res)
				fleetMu.Unlock()
			})
		}
	}
}

func runFleet(t *testing.T, n int) fleetRound {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dsn := postgres.Start(t)
	// PostgreSQL admits 100 connections by default, and SPIRE's default
	// max_open_conns is 100 per server: servers sharing a database must
	// split them (README, "Several servers").
	conf := fmt.Sprintf("database_type = \"postgres\"\nconnection_string = %q\nmax_open_conns = %d", dsn, maxOpenConns)
	servers := make([]*servertest.Server, n)
	for i := range servers {
		servers[i] = servertest.Start(t, servertest.Options{DataStore: conf})
	}
	fleets := make([]*fleet.Fleet, n)
	for i, s := range servers {
		// Closed loop: 0 would mean the default 5 s.
		fleets[i] = fleet.New(fleet.Server{Addr: s.Addr, Bundle: s.Bundle(t)}, time.Millisecond)
		defer fleets[i].Close()
	}
	admin0 := servers[0].Admin(t)
	var entries []*types.Entry
	for j := range fleetAgents() {
		i := j % n
		tok, err := agentv1.NewAgentClient(servers[i].Admin(t)).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
		if err != nil {
			t.Fatal(err)
		}
		id, err := fleets[i].Add(ctx, tok.Value)
		if err != nil {
			t.Fatal(err)
		}
		for k := range entriesPerAgent {
			entries = append(entries, &types.Entry{
				SpiffeId:  &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: fmt.Sprintf("/w/%d/%d", j, k)},
				ParentId:  &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
				Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", k)}},
			})
		}
	}
	// Entries through the first server only: the others learn them from
	// the database.
	for len(entries) > 0 {
		batch := entries[:min(500, len(entries))]
		entries = entries[len(batch):]
		resp, err := entryv1.NewEntryClient(admin0).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: batch})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Results {
			if codes.Code(r.Status.GetCode()) != codes.OK {
				t.Fatalf("entry: %s", r.Status.GetMessage())
			}
		}
	}
	want := fleetAgents() * entriesPerAgent
	for held := 0; held < want; {
		held = 0
		for _, f := range fleets {
			held += f.Held()
		}
		if ctx.Err() != nil {
			t.Fatalf("the fleet holds %d of %d SVIDs", held, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Measure the steady state only, after the signing.
	runtime.GC()
	for _, f := range fleets {
		f.Collect()
	}
	start := time.Now()
	time.Sleep(fleetWindow())
	var lat []time.Duration
	res := fleetRound{servers: n}
	for _, f := range fleets {
		l, failed, lastErr := f.Collect()
		lat = append(lat, l...)
		res.failed += failed
		if lastErr != nil {
			t.Logf("%d servers: %d syncs failed, last: %v", n, failed, lastErr)
		}
	}
	wall := time.Since(start)
	if len(lat) == 0 {
		t.Fatalf("%d servers: no sync finished in %s", n, wall)
	}
	slices.Sort(lat)
	res.syncsPerSecond = float64(len(lat)) / wall.Seconds()
	res.p50, res.p99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	return res
}
