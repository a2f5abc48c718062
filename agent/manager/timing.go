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

// freshRenewTime is renewTime for a credential obtained at now, but never
// sooner than a quarter of what is left of it. The server backdates
// NotBefore (for clock skew) and caps NotAfter at its CA's expiry, so near
// a CA rotation a fresh SVID can be at or past its half-life already:
// renewing it at once would only get another such SVID, in a loop as fast
// as the server answers (each renewal a new connection, until the
// per-agent connection cap refuses them and the SVID expires). Waiting a
// quarter of the rest lets the server move to its next CA meanwhile, and
// leaves three quarters for the renewal.
func freshRenewTime(notBefore, notAfter, now time.Time, r float64) time.Time {
	t := renewTime(notBefore, notAfter, r)
	if floor := now.Add(notAfter.Sub(now) / 4); t.Before(floor) {
		return floor
	}
	return t
}

// pastHalfLife says whether a credential valid from notBefore to notAfter
// is due for replacement at now.
func pastHalfLife(notBefore, notAfter, now time.Time) bool {
	return !now.Before(notBefore.Add(notAfter.Sub(notBefore) / 2))
}
