// Package external makes a server NodeAttestor plugin written against the
// SPIRE plugin SDK (spire.plugin.server.nodeattestor.v1) look like a
// built-in nodeattestor.Attestor: AttestAgent hands it the agent's payload
// and relays its challenges exactly as it does for the TPM or x509pop
// attestors.
//
// The adapter follows SPIRE v1.13.3: its NodeAttestor facade (the Attest
// stream, the checks on the plugin's answer, selectors typed with the plugin
// name) and the agent-ID checks SPIRE's AttestAgent applies to what an
// attestor returns. Errors are gRPC statuses: a plugin's own status keeps
// its code, so the agent sees the code SPIRE would send it, and messages
// carry SPIRE's prefix ("nodeattestor(<name>): ...").
package external
