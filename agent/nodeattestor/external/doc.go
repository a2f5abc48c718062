// Package external makes a NodeAttestor plugin written against the SPIRE
// plugin SDK (spire.plugin.agent.nodeattestor.v1) look like a built-in node
// attestor, so the agent's client drives it as it drives join_token or tpm.
//
// SPIRE runs the plugin's AidAttestation stream alongside the server's
// AttestAgent stream; the nodeattestor.Attestor interface splits that into
// calls. AttestationData opens the plugin stream and returns the payload,
// each Respond relays one challenge over the same stream, and Done (or the
// context given to AttestationData ending, or the next AttestationData)
// closes it. Checks and error texts follow SPIRE v1.13.3's facade: a missing
// payload or challenge response is an Internal status prefixed
// "nodeattestor(<name>): ", and the plugin's own errors keep their codes.
package external
