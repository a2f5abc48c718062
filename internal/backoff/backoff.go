// Package backoff is the agent's retry schedule after failures, shared by
// the agent and the fleet simulator that plays many of them.
package backoff

import "time"

const (
	// Base is the first retry delay after a failure.
	Base = time.Second
	// Cap bounds the retry delay while the server is down.
	Cap = 30 * time.Second
)

// Delay returns how long to wait after the n-th consecutive failure
// (n >= 1): exponential from Base up to Cap, with the upper half jittered
// by r in [0,1) so that a fleet of agents restarted together does not
// hammer a recovering server in step.
func Delay(n int, r float64) time.Duration {
	d := Base
	for i := 1; i < n && d < Cap; i++ {
		d *= 2
	}
	d = min(d, Cap)
	return d/2 + time.Duration(r*float64(d/2))
}
