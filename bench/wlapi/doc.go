// Package wlapi splits the time of a new-connection Workload API
// FetchX509SVID between the go-spiffe client and our agent. The agent is
// the real Workload API server (agent/workloadapi with its connection
// limits, the unix attestor, the real agent cache holding real SVIDs); the
// agent's share is timed by a client that speaks raw HTTP/2 from bytes
// built once (its own work is a connect, one write and the parsing of a
// few frame headers), the go-spiffe share is the rest of what
// workloadapi.FetchX509SVID takes in the same rounds. `go test
// ./bench/wlapi` runs it small, checking its invariants;
//
//	BENCH_REPORT=1 go test -count=1 -timeout 20m ./bench/wlapi
//
// runs it at full size and writes bench/RESULTS-wlapi.md.
// BENCH_WLAPI_PROFILE=<file> writes a CPU profile of the raw-client rounds
// (the agent's side, since the raw client does next to nothing).
package wlapi
