package hsm_test

import (
	"os"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/softhsm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	softhsm.Cleanup()
	os.Exit(code)
}
