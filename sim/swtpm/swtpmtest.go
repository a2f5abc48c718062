package swtpm

import (
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// StartT starts n Unix-socket TPMs for a test and stops them at its end.
// Without swtpm the test is skipped, or fails under REQUIRE_SIM=1.
func StartT(tb testing.TB, n int) *Fleet {
	tb.Helper()
	if err := Available(); err != nil {
		simtest.Skip(tb, err.Error())
	}
	f, err := Start(tb.TempDir(), n, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.Close)
	return f
}
