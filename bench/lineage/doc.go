// Package lineage benchmarks the lineage workload attestor against the
// procfs unix attestor: attestation latency per call, new-connection
// FetchX509SVID through go-spiffe from a 50 MB workload, and the cost of
// the eBPF tracer on a fork/exec storm. As root, `go test ./bench/lineage`
// runs them small, checking only their invariants;
//
//	BENCH_REPORT=1 go test -count=1 -timeout 20m ./bench/lineage
//
// runs them at full size and writes bench/RESULTS-lineage.md and
// bench/lineage-latency.svg.
package lineage
