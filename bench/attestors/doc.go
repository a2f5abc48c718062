// Package attestors benchmarks the container workload attestors against
// the unix attestor, measured in the same run on a real container of a
// private dockerd: per-call attestation latency of the docker attestor,
// cached and uncached, and new-connection FetchX509SVID through go-spiffe
// from a process in the container's cgroups to a real Workload API server.
// As root, `go test ./bench/attestors` runs them small, checking only their
// invariants;
//
//	BENCH_REPORT=1 go test -count=1 -timeout 20m ./bench/attestors
//
// runs them at full size and writes bench/RESULTS-attestors.md.
package attestors
