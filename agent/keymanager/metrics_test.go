package keymanager_test

import (
	"context"
	"crypto"
	"errors"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/keymanagertest"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe-hw/spire-hw/telemetry/telemetrytest"
)

// TestWithMetricsConformance: counting calls changes nothing a caller of
// the key manager sees.
func TestWithMetricsConformance(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		return keymanager.WithMetrics(memory.New(), telemetrytest.New(t, telemetry.AgentService).Metrics)
	})
}

// byPublicKey is a key manager that, as an external plugin's, picks the
// agent key by the stored SVID's public key.
type byPublicKey struct {
	*memory.KeyManager
	asked crypto.PublicKey
}

var errNotThatOne = errors.New("no key for that public key")

func (k *byPublicKey) AgentKeyFor(_ context.Context, pub crypto.PublicKey) (crypto.Signer, error) {
	k.asked = pub
	return nil, errNotThatOne
}

// TestWithMetrics: each call is counted under both of SPIRE's names with
// its outcome, and AgentKeyFor reaches the key manager's own lookup when it
// has one.
func TestWithMetrics(t *testing.T) {
	ctx := context.Background()
	r := telemetrytest.New(t, telemetry.AgentService)
	inner := &byPublicKey{KeyManager: memory.New()}
	km := keymanager.WithMetrics(inner, r.Metrics)

	if _, err := km.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("AgentKey: %v", err)
	}
	key, err := km.GenerateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := km.SetAgentKey(ctx, nil); err == nil {
		t.Fatal("SetAgentKey(nil) succeeded")
	}
	if _, err := km.AgentKey(ctx); err != nil {
		t.Fatal(err)
	}
	f, ok := km.(interface {
		AgentKeyFor(context.Context, crypto.PublicKey) (crypto.Signer, error)
	})
	if !ok {
		t.Fatal("the wrapper hides AgentKeyFor")
	}
	if _, err := f.AgentKeyFor(ctx, key.Public()); !errors.Is(err, errNotThatOne) || inner.asked != key.Public() {
		t.Fatalf("AgentKeyFor: %v, asked %v: the key manager's own lookup was not used", err, inner.asked)
	}

	for _, c := range []struct {
		name    string
		ok, bad int
	}{
		{"generate_key_pair", 1, -1},
		{"generate_key", 1, -1},
		{"store_private_key", 1, 1},
		{"fetch_private_key", 1, 2},
		{"get_key", 1, 1},
		{"get_keys", -1, 1},
	} {
		name := "spire_agent_agent_key_manager_" + c.name
		if got := r.Calls(name, "OK"); got != c.ok {
			t.Errorf("%s{status=OK} = %d, want %d", name, got, c.ok)
		}
		if got := r.Calls(name, "Unknown"); got != c.bad {
			t.Errorf("%s{status=Unknown} = %d, want %d", name, got, c.bad)
		}
	}

	// Without AgentKeyFor of its own, the key manager's AgentKey answers.
	plain := keymanager.WithMetrics(memory.New(), r.Metrics).(interface {
		AgentKeyFor(context.Context, crypto.PublicKey) (crypto.Signer, error)
	})
	if _, err := plain.AgentKeyFor(ctx, key.Public()); !errors.Is(err, keymanager.ErrNoAgentKey) {
		t.Fatalf("AgentKeyFor without a lookup of its own: %v", err)
	}
	if km := keymanager.WithMetrics(inner, nil); km != keymanager.KeyManager(inner) {
		t.Error("WithMetrics(km, nil) wraps km")
	}
}
