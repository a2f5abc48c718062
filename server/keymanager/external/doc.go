// Package external makes a KeyManager plugin written against the SPIRE
// plugin SDK (spire.plugin.server.keymanager.v1) look like a built-in
// keymanager.KeyManager, so the CA cannot tell an HSM plugin from the memory
// or disk key manager.
//
// The adapter follows SPIRE v1.13.3's KeyManager facade: the same request
// conversions, the same checks on what the plugin returns, and errors that
// are gRPC statuses whose messages SPIRE would print
// ("keymanager(<name>): ..."), so operators can search for the texts they
// know. A key the plugin does not hold is reported as an error wrapping
// keymanager.ErrNotFound.
package external
