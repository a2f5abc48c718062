// Package hsm benchmarks the CA's signing path with keys in memory and in a
// SoftHSM2 token: raw signatures (the limit), Go's x509.CreateCertificate
// (the baseline), the CA with a memory key, with an HSM root over an
// in-memory intermediate, and with every SVID signed in the token. Run
//
//	HSM_BENCH_REPORT=1 go test ./bench/hsm -run TestReport -timeout 20m
//
// to write RESULTS-hsm.md and throughput-hsm.svg next to this package, or
// go test -bench . ./bench/hsm for the usual benchmark output.
package hsm
