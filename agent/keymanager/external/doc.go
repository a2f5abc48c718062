// Package external makes a KeyManager plugin written against the SPIRE
// plugin SDK (spire.plugin.agent.keymanager.v1) the agent's key manager, so
// the agent's own key can live in an HSM or cloud KMS behind a plugin.
//
// The key never leaves the plugin: the crypto.Signer this package returns
// signs through SignData. As SPIRE's agent does, keys are kept under the
// IDs "agent-svid-A" and "agent-svid-B": a new key goes into the slot that
// does not hold the current agent key, so a failed renewal never destroys
// the key in use. A plugin that already served a SPIRE agent keeps working.
//
// After a restart the adapter knows only what the plugin holds. With one
// agent key, AgentKey returns it; with both slots filled (any renewal leaves
// the previous key behind) only the agent's SVID says which key it
// certifies, so the agent asks AgentKeyFor with the SVID's public key, the
// way SPIRE matches its stored SVID to the plugin's keys.
//
// Checks and error texts follow SPIRE v1.13.3's facade: errors are gRPC
// statuses prefixed "keymanager(<name>): ", and the plugin's own errors keep
// their codes.
package external
