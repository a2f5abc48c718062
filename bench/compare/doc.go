// Package compare runs the same scenarios against two implementations of
// the SPIRE server and agent, ours and upstream SPIRE, as real binaries
// with equivalent configurations (SQLite, memory key managers, join-token
// node attestation, unix workload attestor), alternating them round by
// round (A B A B) so that drift of a shared, noisy machine falls on both.
//
// The scenarios measure what a fleet operator feels: node attestation
// latency, entry propagation to an agent, Workload API fetches, SVID
// signing throughput through the server API, the largest simulated fleet
// (sim/fleet) a server keeps syncing within 100 ms, and agent memory with
// a large cache. Every figure is reported next to upstream's from the
// same run.
//
// `make bench-peer` builds upstream SPIRE in the separate module bench/peer
// and runs the comparison at full size (TestPeer with BENCH_PEER_BIN and
// BENCH_REPORT=1), writing bench/RESULTS-peer.md. Without BENCH_PEER_BIN,
// `go test` runs the same harness against our binaries alone at tiny sizes,
// so that the harness cannot rot without SPIRE being built.
package compare
