// Package ratelimit measures what SPIRE's per-IP attestation limit does
// under a flood: a real server on loopback, one source sending wrong join
// tokens as fast as its workers can, and an agent from another source
// attesting meanwhile. Its report test writes bench/RESULTS-ratelimit.md
// under BENCH_REPORT=1; `make test` runs it at a tiny size.
package ratelimit
