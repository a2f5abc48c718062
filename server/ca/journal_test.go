package ca

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
)

// journalStore records only the journal; the bundle calls succeed.
type journalStore struct{ data []byte }

func (s *journalStore) FetchCAJournal(context.Context, string) (*datastore.CAJournal, error) {
	return nil, datastore.ErrNotFound
}
func (s *journalStore) FindCAJournal(context.Context, []string) (*datastore.CAJournal, error) {
	return nil, datastore.ErrNotFound
}
func (s *journalStore) SetCAJournal(_ context.Context, j *datastore.CAJournal) error {
	s.data = j.Data
	return nil
}
func (s *journalStore) PruneCAJournals(context.Context, time.Time) (int, error) {
	return 0, nil
}
func (s *journalStore) AppendBundle(_ context.Context, b *types.Bundle) (*types.Bundle, error) {
	return b, nil
}
func (s *journalStore) PruneBundle(context.Context, string, time.Time) (bool, error) {
	return false, nil
}
func (s *journalStore) FetchBundle(context.Context, string) (*types.Bundle, error) {
	return nil, datastore.ErrNotFound
}
func (s *journalStore) ModifyBundle(context.Context, string, func(*types.Bundle) error) (*types.Bundle, error) {
	return nil, datastore.ErrNotFound
}

// sampleJournal is a real journal with an active and a prepared slot.
func sampleJournal(t testing.TB) []byte {
	store := &journalStore{}
	now := time.Now()
	clock := func() time.Time { return now }
	m, err := New(context.Background(), Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		KeyManager:  memory.New(), Store: store, CATTL: time.Hour, Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(31 * time.Minute)
	if err := m.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return store.data
}

func TestDecodeJournalRoundTrip(t *testing.T) {
	data := sampleJournal(t)
	xs, js, err := decodeJournal(data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := encodeJournal(xs, js)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Fatalf("journal does not round-trip:\n%s\n%s", data, again)
	}
}

func TestDecodeJournalRejects(t *testing.T) {
	data := sampleJournal(t)
	edit := func(change func(j map[string]any)) []byte {
		var j map[string]any
		if err := json.Unmarshal(data, &j); err != nil {
			t.Fatal(err)
		}
		change(j)
		out, _ := json.Marshal(j)
		return out
	}
	x509Entry := func(j map[string]any, i int) map[string]any {
		return j["x509_cas"].([]any)[i].(map[string]any)
	}
	jwtEntry := func(j map[string]any, i int) map[string]any {
		return j["jwt_keys"].([]any)[i].(map[string]any)
	}
	rows := []struct {
		name string
		data []byte
		want string
	}{
		{"not JSON", []byte("{"), "journal"},
		{"future version", edit(func(j map[string]any) { j["version"] = 2 }), "unsupported version"},
		{"two active", edit(func(j map[string]any) {
			x509Entry(j, 0)["status"], x509Entry(j, 1)["status"] = "active", "active"
		}), "more than one"},
		{"same slot twice", edit(func(j map[string]any) {
			x509Entry(j, 1)["slot"], x509Entry(j, 1)["key_id"] = x509Entry(j, 0)["slot"], x509Entry(j, 0)["key_id"]
		}), "recorded twice"},
		{"key id of another slot", edit(func(j map[string]any) { x509Entry(j, 0)["key_id"] = "x509-CA-B" }), "does not belong"},
		{"JWT key id as CA key", edit(func(j map[string]any) { x509Entry(j, 0)["key_id"] = "JWT-Signer-A" }), "does not belong"},
		{"unknown slot", edit(func(j map[string]any) { x509Entry(j, 0)["slot"] = "C" }), "unknown slot"},
		{"unknown status", edit(func(j map[string]any) { x509Entry(j, 0)["status"] = "revoked" }), "unknown status"},
		{"public key of the other CA", edit(func(j map[string]any) {
			x509Entry(j, 0)["public_key"] = x509Entry(j, 1)["public_key"]
		}), "disagrees with the certificate"},
		{"not_after edited", edit(func(j map[string]any) {
			x509Entry(j, 0)["not_after"] = x509Entry(j, 0)["not_after"].(float64) + 3600
		}), "disagrees"},
		{"no roots", edit(func(j map[string]any) { delete(x509Entry(j, 0), "roots") }), "no roots"},
		{"bad certificate", edit(func(j map[string]any) { x509Entry(j, 0)["certificate"] = "AAAA" }), "slot"},
		{"empty kid", edit(func(j map[string]any) { jwtEntry(j, 0)["kid"] = "" }), "empty kid"},
		{"bad JWT public key", edit(func(j map[string]any) { jwtEntry(j, 0)["public_key"] = "AAAA" }), "JWT key slot"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, _, err := decodeJournal(r.data)
			if err == nil || !strings.Contains(err.Error(), r.want) || !strings.HasPrefix(err.Error(), "ca: journal: ") {
				t.Fatalf("decodeJournal = %v, want an error containing %q", err, r.want)
			}
		})
	}
}
