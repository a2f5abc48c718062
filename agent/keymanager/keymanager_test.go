package keymanager_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
)

// TestConformance runs the same contract against every KeyManager.
func TestConformance(t *testing.T) {
	impls := map[string]func(t *testing.T) keymanager.KeyManager{
		"memory": func(*testing.T) keymanager.KeyManager { return memory.New() },
		"disk": func(t *testing.T) keymanager.KeyManager {
			km, err := disk.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return km
		},
	}
	for name, newKM := range impls {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			km := newKM(t)
			if _, err := km.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
				t.Fatalf("AgentKey on empty manager: got %v, want ErrNoAgentKey", err)
			}
			k1, err := km.GenerateKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			k2, err := km.GenerateKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ec, ok := k1.Public().(*ecdsa.PublicKey)
			if !ok || ec.Curve != elliptic.P256() {
				t.Fatalf("generated key is %T, want ECDSA P-256", k1.Public())
			}
			if k1.Public().(*ecdsa.PublicKey).Equal(k2.Public()) {
				t.Fatal("two generated keys are equal")
			}
			if _, err := km.AgentKey(ctx); !errors.Is(err, keymanager.ErrNoAgentKey) {
				t.Fatal("GenerateKey must not set the agent key")
			}
			if err := km.SetAgentKey(ctx, k1); err != nil {
				t.Fatal(err)
			}
			got, err := km.AgentKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !ec.Equal(got.Public()) {
				t.Fatal("AgentKey returned a different key")
			}
			if err := km.SetAgentKey(ctx, nil); err == nil {
				t.Fatal("SetAgentKey(nil) succeeded")
			}
		})
	}
}
