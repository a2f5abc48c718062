// Package lineage keeps a live table of the processes on this machine and of
// the executables their ancestors ran, fed by eBPF tracepoints on fork, exec,
// exit and cgroup changes, so that identifying a process is a map
// lookup rather than a walk of /proc and a hash of its binary.
//
// Processes are keyed by Key: the inode of the process's pidfs entry, which
// is what fstat on a pidfd returns and is never given to another process
// while the machine is up, so a reused PID cannot be mistaken for the process
// that held it before. On kernels without pidfs the key falls back to the
// thread-group ID and the start time.
//
// Each process's chain of ancestors is copied when it executes (and when it
// is forked), so it survives the ancestors exiting. Processes that existed
// before the tracer are read from /proc when it starts. Exited processes stay
// in the table for a grace period; the table never grows past its bound.
//
// Start loads and attaches the BPF programs (compiled from bpf/lineage.bpf.c
// by bpf2go; `go generate` rebuilds them with clang). The programs attach
// through BTF (tp_btf) and need neither tracefs nor debugfs. When they
// cannot load, Start says why and ReadProc gives the same facts from /proc.
//
// This package is on the ground floor of the house: it imports nothing from
// the agent or the server.
package lineage
