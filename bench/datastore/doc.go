// Package datastore measures what durable SQLite commits cost entry
// creation: synchronous=FULL (the default, which syncs the WAL at every
// commit so that an acknowledged write survives a power loss) against
// synchronous=NORMAL (the driver's old default, which may lose the last
// commits), in the same run, as ratios.
//
// Under BENCH_REPORT=1 its report test writes bench/RESULTS-datastore.md;
// otherwise it runs the same harness at a tiny size so that `make test`
// keeps it working. BenchmarkCreateEntry gives the same comparison to
// `go test -bench`.
package datastore
