// Package multiserver measures the deployment of several servers on one
// database (issue 14): entry creation per datastore engine, with SQLite as
// the baseline of the same run, and a simulated fleet's syncs against one,
// two and three servers sharing one PostgreSQL database, with one server
// as the baseline.
//
// Under BENCH_REPORT=1 its report test writes bench/RESULTS-multiserver.md
// and bench/multiserver-fleet.svg; otherwise it runs the same harness at a
// tiny size so that `make test` keeps it working. The servers run in the
// test's process, on the same CPUs as the fleet and the database servers:
// on a machine of two CPUs the figures say what sharing a database costs,
// not what more machines would add.
package multiserver
