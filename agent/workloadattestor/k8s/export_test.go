package k8s

import "time"

// SetRequestTimeout shortens the bound on one /pods fetch, so that a test
// of a hanging kubelet need not wait SPIRE's 10 s.
func SetRequestTimeout(a *Attestor, d time.Duration) { a.requestTimeout = d }
