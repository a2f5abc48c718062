package sqlstore

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// wantConflict fails unless err is ErrConflict, and only that: a lost race
// read as "not found" would send an agent to re-attest for nothing.
func wantConflict(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("%s: error = %v, want ErrConflict alone", what, err)
	}
}

// wantNode fails unless the stored node has these serials and selectors.
func wantNode(t *testing.T, ds datastore.DataStore, id string, want datastore.NodeSerials, notAfter int64, sels ...string) {
	t.Helper()
	got, err := ds.FetchAttestedNode(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Serials() != want || got.NewCertNotAfter != notAfter || !selEqual(got.Selectors, sel(sels...)) {
		t.Fatalf("stored node %+v (selectors %v), want serials %+v, new_expires_at %d, selectors %v", got, got.Selectors, want, notAfter, sel(sels...))
	}
}

// testNodeUpdateConflict: a node write made from a read that another write
// has overtaken is refused with ErrConflict and changes nothing, so the
// row keeps the winner's values. Each step is a race between two servers
// that read the same node.
func testNodeUpdateConflict(t *testing.T, ds datastore.DataStore) {
	const id = "spiffe://td/spire/agent/join_token/1"
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "join_token",
		CertSerial: "1", CertNotAfter: 100, Selectors: sel("a", "1")}); err != nil {
		t.Fatal(err)
	}
	read, err := ds.FetchAttestedNode(ctx, id)
	if err != nil {
		t.Fatal(err)
	}

	// Two renewals from the same read: the first sets serial 2 pending,
	// the second (serial 3, and selectors, which must not be written
	// either) is refused.
	a, b := *read, *read
	a.NewCertSerial, a.NewCertNotAfter, a.Selectors = "2", 200, nil
	b.NewCertSerial, b.NewCertNotAfter, b.Selectors = "3", 300, sel("loser", "x")
	if err := ds.UpdateAttestedNode(ctx, &a, read.Serials()); err != nil {
		t.Fatalf("first renewal: %v", err)
	}
	wantConflict(t, ds.UpdateAttestedNode(ctx, &b, read.Serials()), "second renewal")
	wantNode(t, ds, id, datastore.NodeSerials{CertSerial: "1", NewCertSerial: "2"}, 200, "a", "1")

	// The agent's first use of serial 2 makes it current while another
	// server, from the same read, renews again with serial 1: without
	// the condition the renewal would write serial 1 back as current and
	// the agent, now holding serial 2, would be locked out.
	read, _ = ds.FetchAttestedNode(ctx, id)
	act, renew := *read, *read
	act.CertSerial, act.CertNotAfter, act.NewCertSerial, act.NewCertNotAfter, act.Selectors = "2", 200, "", 0, nil
	renew.NewCertSerial, renew.NewCertNotAfter, renew.Selectors = "4", 400, nil
	if err := ds.UpdateAttestedNode(ctx, &act, read.Serials()); err != nil {
		t.Fatalf("activation: %v", err)
	}
	wantConflict(t, ds.UpdateAttestedNode(ctx, &renew, read.Serials()), "renewal after activation")
	wantNode(t, ds, id, datastore.NodeSerials{CertSerial: "2"}, 0, "a", "1")

	// A ban wins over a renewal read before it: the renewal cannot undo
	// it by writing its serials back.
	read, _ = ds.FetchAttestedNode(ctx, id)
	ban, renew := *read, *read
	ban.CertSerial, ban.NewCertSerial, ban.Selectors = "", "", nil
	renew.NewCertSerial, renew.NewCertNotAfter, renew.Selectors = "5", 500, nil
	if err := ds.UpdateAttestedNode(ctx, &ban, read.Serials()); err != nil {
		t.Fatalf("ban: %v", err)
	}
	wantConflict(t, ds.UpdateAttestedNode(ctx, &renew, read.Serials()), "renewal after ban")
	if got, _ := ds.FetchAttestedNode(ctx, id); !got.Banned() {
		t.Fatalf("ban undone: %+v", got)
	}
	// The same write from a current read goes through (a banned node's
	// serials are both empty).
	if err := ds.UpdateAttestedNode(ctx, &ban, ban.Serials()); err != nil {
		t.Fatalf("ban again from a current read: %v", err)
	}

	// Absent is ErrNotFound, not ErrConflict, whatever was expected:
	// never created, and deleted after it was read.
	wantErr(t, ds.UpdateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: "spiffe://td/none"},
		datastore.NodeSerials{CertSerial: "1"}), datastore.ErrNotFound)
	if _, err := ds.DeleteAttestedNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	err = ds.UpdateAttestedNode(ctx, &renew, renew.Serials())
	if !errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("update of a deleted node: %v, want ErrNotFound alone", err)
	}
}

// testNodeUpdateRace: writers that read the same node and write at once,
// each in its own transaction on its own connection, as servers sharing
// the database do: exactly one wins, every other gets ErrConflict, and the
// row holds the winner's serial and selectors, whole.
func testNodeUpdateRace(t *testing.T, ds datastore.DataStore) {
	const (
		id      = "spiffe://td/spire/agent/x509pop/race"
		writers = 16
	)
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x509pop",
		CertSerial: "0", CertNotAfter: 100, Selectors: sel("a", "1")}); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		read, err := ds.FetchAttestedNode(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			n := *read
			n.NewCertSerial = fmt.Sprintf("%d-%d", round, i)
			n.NewCertNotAfter = int64(1000*round + i)
			n.Selectors = sel("writer", n.NewCertSerial, "round", fmt.Sprint(round))
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = ds.UpdateAttestedNode(ctx, &n, read.Serials())
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both won", round, winner, i)
			case err == nil:
				winner = i
			default:
				wantConflict(t, err, fmt.Sprintf("round %d, writer %d", round, i))
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won", round)
		}
		w := fmt.Sprintf("%d-%d", round, winner)
		wantNode(t, ds, id, datastore.NodeSerials{CertSerial: read.CertSerial, NewCertSerial: w}, int64(1000*round+winner),
			"round", fmt.Sprint(round), "writer", w)
	}
}
