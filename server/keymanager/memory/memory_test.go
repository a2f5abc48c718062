package memory_test

import (
	"testing"

	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/keymanagertest"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
)

func TestConformance(t *testing.T) {
	keymanagertest.Run(t, func(*testing.T) keymanager.KeyManager { return memory.New() })
}
