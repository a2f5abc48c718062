// Package external makes a WorkloadAttestor plugin written against the SPIRE
// plugin SDK (spire.plugin.agent.workloadattestor.v1) look like a built-in
// workload attestor, so the Workload API cannot tell it from unix or lineage.
//
// The adapter follows SPIRE v1.13.3's WorkloadAttestor facade: every selector
// value the plugin returns becomes a selector whose type is the plugin's
// name, and errors from the plugin stay gRPC statuses with their codes and a
// "workloadattestor(<name>): " prefix, the texts SPIRE operators know. A
// plugin only gets a PID, which may name another process by the time it
// answers, so the adapter re-checks the caller's pidfd afterwards and refuses
// a stale answer with an error that is not a gRPC status: the caller's fault
// (or the kernel's), not the plugin's.
package external
