// Package tpmkey benchmarks the agent's TPM-resident SVID key (tpm.ResidentKey
// on swtpm) against an ECDSA P-256 key in memory, the baseline measured in
// the same run: the cost of signing a CSR, of a TLS 1.3 mutual handshake
// over loopback whose client certificate key is the resident key, and of an
// agent's start to its first workload X509-SVID with KeyManager "tpm"
// against "memory", through the real binaries.
//
//	go test -run XXX -bench . ./bench/tpmkey/
//
// TestReport runs every measurement interleaved, key against key; with
// BENCH_REPORT=1 it runs at full length and writes bench/RESULTS-tpmkey.md,
// otherwise it runs a few iterations as a test so that the harness cannot
// rot. It also splits a resident signature into its TPM commands
// (ContextLoad, Sign, FlushContext) by timing them on a recording proxy
// between the key's connection and swtpm.
package tpmkey
