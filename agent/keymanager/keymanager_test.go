package keymanager_test

import (
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/keymanagertest"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
)

// TestConformance runs the same contract against every built-in KeyManager;
// external plugins run it in their own package.
func TestConformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		keymanagertest.Run(t, func(*testing.T) keymanager.KeyManager { return memory.New() })
	})
	t.Run("disk", func(t *testing.T) {
		keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
			km, err := disk.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return km
		})
	})
}
