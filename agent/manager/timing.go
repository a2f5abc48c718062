package manager

import (
	"time"
)

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
