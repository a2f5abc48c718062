// Package plugin benchmarks what an external WorkloadAttestor (an SDK
// plugin in its own process, reached through the plugin host over
// go-plugin's gRPC) adds to each Workload API call, against the built-in
// unix attestor alone, measured in the same run: end to end through the
// agent's Workload API handler on a real Unix socket, and the bare Attest
// call. `go test ./bench/plugin` runs it small, checking only its
// invariants;
//
//	BENCH_REPORT=1 go test -p 1 -count=1 -run Test ./bench/plugin
//
// runs it at full size and writes bench/RESULTS-plugin.md, with a CPU
// profile of the host's side of the plugin round trip.
package plugin
