// Package attestors benchmarks the docker, k8s and systemd workload
// attestors against the unix attestor, all measured in the same run on
// real processes: a container of a private dockerd, a pod container listed
// by sim/kubelet, and a unit of a real systemd --user. It measures
// per-call attestation latency, cached and uncached, and new-connection
// FetchX509SVID through go-spiffe from a process in a container's cgroups
// to a real Workload API server. As root, `go test ./bench/attestors` runs
// them small, checking only their invariants;
//
//	BENCH_REPORT=1 go test -count=1 -timeout 20m ./bench/attestors
//
// runs them at full size and writes bench/RESULTS-attestors.md, one report
// for every attestor. A run narrowed with -run (-run Latency/k8s) measures
// its rows at full size and writes no report.
package attestors
