// Package datastore measures the datastore: what durable SQLite commits cost
// entry creation, synchronous=FULL (the default, which syncs the WAL at every
// commit so that an acknowledged write survives a power loss) against
// synchronous=NORMAL (the driver's old default, which may lose the last
// commits), in the same run, as ratios; and, for servers sharing a
// PostgreSQL or MariaDB database, how long a change made through one takes
// to reach another's caches through the change events, and how fast a
// server applies them against a full reload of every entry in the same run
// (TestEventPropagation).
//
// Under BENCH_REPORT=1 its report tests write their sections of
// bench/RESULTS-datastore.md; otherwise they run the same harness at a tiny
// size so that `make test` keeps it working. BenchmarkCreateEntry gives the
// durability comparison to `go test -bench`.
package datastore
