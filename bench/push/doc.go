// Package push measures our server's change notices (wire/push) against
// polling, in one run: how long an entry created after attestation takes
// to reach an agent's SVID cache with notices and with the 5 s poll alone
// (p50/p99), the same for 1,000 entries created at once, and what an idle
// subscribed agent costs the server (memory, goroutines, and the CPU of a
// change that concerns no agent). The server and the agents are real
// (servertest's server on loopback TLS, agent/manager agents), in one
// process. Its report test writes bench/RESULTS-push.md under
// BENCH_REPORT=1; `make test` runs it at a tiny size.
package push
