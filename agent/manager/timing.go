package manager

import (
	"time"
)

const (
	// backoffBase is the first retry delay after a failure.
	backoffBase = time.Second
	// backoffCap bounds the retry delay while the server is down.
	backoffCap = 30 * time.Second
)

// backoff returns how long to wait after the n-th consecutive failure
// (n >= 1): exponential from backoffBase up to backoffCap, with the upper
// half jittered by r in [0,1) so that a fleet of agents restarted together
// does not hammer a recovering server in step.
func backoff(n int, r float64) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffCap; i++ {
		d *= 2
	}
	d = min(d, backoffCap)
	return d/2 + time.Duration(r*float64(d/2))
}

// renewTime returns when to renew a credential valid from notBefore to
// notAfter: at half its lifetime, brought forward by up to a tenth of the
// lifetime (r in [0,1)) so that agents spread their renewals.
func renewTime(notBefore, notAfter time.Time, r float64) time.Time {
	life := notAfter.Sub(notBefore)
	return notBefore.Add(life/2 - time.Duration(r*float64(life/10)))
}

// pastHalfLife says whether a credential valid from notBefore to notAfter
// is due for replacement at now.
func pastHalfLife(notBefore, notAfter, now time.Time) bool {
	return !now.Before(notBefore.Add(notAfter.Sub(notBefore) / 2))
}
