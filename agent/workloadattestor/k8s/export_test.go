package k8s

import "time"

// SetRequestTimeout shortens the bound on one /pods fetch, so that a test
// of a hanging kubelet need not wait SPIRE's 10 s.
func SetRequestTimeout(a *Attestor, d time.Duration) { a.requestTimeout = d }

// SetProcDir points the attestor's /proc reads elsewhere, so that a test
// can tell an answer from the cgroup ID index from one read from /proc.
func SetProcDir(a *Attestor, dir string) { a.procDir = dir }

// FastPath reports whether the attestor locates known cgroups by their ID.
func FastPath(a *Attestor) bool { return a.cgroups != nil }
