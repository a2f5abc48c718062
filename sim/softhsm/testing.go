package softhsm

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

var (
	shared     *Sim
	sharedErr  error
	sharedOnce sync.Once
	tokenSeq   struct {
		sync.Mutex
		n int
	}
)

// Start returns the process's Sim, creating it in a temporary directory
// and pointing SOFTHSM2_CONF at it on first use. Without SoftHSM2 the test
// is skipped (failed under REQUIRE_SIM=1). Call Cleanup from TestMain to
// remove the directory.
func Start(tb testing.TB) *Sim {
	tb.Helper()
	if err := Available(); err != nil {
		simtest.Skip(tb, err.Error())
	}
	sharedOnce.Do(func() {
		if c := os.Getenv("SOFTHSM2_CONF"); c != "" && os.Getenv("SOFTHSM_SIM_CHILD") == "1" {
			// A re-executed test binary reuses its parent's tokens.
			dir := os.Getenv("SOFTHSM_SIM_DIR")
			mod, _ := ModulePath()
			shared = &Sim{Dir: dir, Conf: c, ModulePath: mod}
			return
		}
		dir, err := os.MkdirTemp("", "softhsm-sim-")
		if err != nil {
			sharedErr = err
			return
		}
		if shared, sharedErr = New(dir); sharedErr == nil {
			sharedErr = os.Setenv("SOFTHSM2_CONF", shared.Conf)
		}
	})
	if sharedErr != nil {
		tb.Fatalf("softhsm: %v", sharedErr)
	}
	return shared
}

// NewToken initialises a fresh token with a unique label on the process's
// Sim.
func NewToken(tb testing.TB) *Token {
	tb.Helper()
	s := Start(tb)
	tokenSeq.Lock()
	tokenSeq.n++
	label := fmt.Sprintf("test-%d-%d", os.Getpid(), tokenSeq.n)
	tokenSeq.Unlock()
	tok, err := s.InitToken(label, "")
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// ChildEnv is the environment a re-executed test binary needs to use the
// same Sim (for tests that must run in a fresh process).
func ChildEnv(s *Sim) []string {
	return append(os.Environ(), s.Env(), "SOFTHSM_SIM_CHILD=1", "SOFTHSM_SIM_DIR="+s.Dir)
}

// Cleanup removes the process's Sim directory, if any. Call it from
// TestMain after m.Run.
func Cleanup() {
	if shared != nil && os.Getenv("SOFTHSM_SIM_CHILD") != "1" {
		_ = os.RemoveAll(shared.Dir)
	}
}
