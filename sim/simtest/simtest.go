// Package simtest decides what a test does when a simulator, a database
// server or a privilege it needs is missing: on a laptop it skips with the
// reason; in CI (REQUIRE_SIM=1) a missing part is a failure, so nothing that
// CI is meant to exercise can silently skip.
package simtest

import (
	"os"
	"testing"
)

// Required reports whether missing test prerequisites must fail the test.
func Required() bool { return os.Getenv("REQUIRE_SIM") == "1" }

// Skip skips the test with reason, or fails it when REQUIRE_SIM=1.
func Skip(tb testing.TB, reason string) {
	tb.Helper()
	if Required() {
		tb.Fatalf("REQUIRE_SIM=1 but the test cannot run: %s", reason)
	}
	tb.Skip(reason)
}

// RequireRoot skips (or fails under REQUIRE_SIM=1) unless running as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Skip(tb, "needs root")
	}
}
