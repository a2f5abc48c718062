// Package hsm keeps signing keys inside a PKCS#11 token (an HSM, or SoftHSM2
// in tests) and hands them out as crypto.Signer values whose private half
// never leaves the token.
//
// A Token is one logged-in connection to one token. It finds the keys under
// its label prefix once at start-up and caches them, so signing costs one
// PKCS#11 round trip. Concurrency is bounded twice: crypto11's session pool
// is sized explicitly (MaxSessions; its default would try to open 1023
// sessions) and a semaphore in front of it makes a burst queue instead of
// failing.
//
// When the token goes away at run time (unplugged, its SoftHSM directory
// moved), signing fails fast with an error wrapping ErrUnavailable and
// Healthy turns false. A background loop then closes every crypto11 context,
// configures again with backoff, finds the keys again and checks that their
// public keys are the ones it had, and turns healthy again without a
// restart. A wrong PIN is never retried: tokens lock after a few failures.
//
// The package is plain Go and imports nothing from the server; the server's
// KeyManager and UpstreamAuthority "pkcs11" are thin adapters over it.
package hsm
