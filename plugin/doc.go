// Package plugin is the host for external plugins: binaries written against
// the SPIRE plugin SDK (github.com/spiffe/spire-plugin-sdk) and started with
// hashicorp/go-plugin exactly as SPIRE starts them. It launches a plugin,
// checks its checksum, serves host services back to it over go-plugin's
// broker, configures it, and supervises it: a plugin that crashes is
// restarted with backoff and configured again.
//
// The host hands out a grpc.ClientConnInterface that stays valid across
// restarts; the adapters that make an external plugin look like a built-in
// of its type (server/keymanager/external, agent/workloadattestor/external,
// ...) are built on it and know nothing about processes.
package plugin
