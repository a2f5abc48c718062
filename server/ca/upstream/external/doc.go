// Package external makes an UpstreamAuthority plugin written against the
// SPIRE plugin SDK (spire.plugin.server.upstreamauthority.v1) look like a
// built-in upstream.Authority, and lets it publish the server's JWT keys
// (upstream.JWTKeyPublisher).
//
// The SDK's RPCs are streams that first answer the request and then keep
// pushing upstream bundle changes. Our interfaces are one-shot: the adapter
// takes the first response, validates it as SPIRE's facade does, and ends
// the stream. Later upstream root or key changes therefore reach the bundle
// only at the next mint or publish, not as they happen.
//
// Errors are gRPC statuses with SPIRE's messages and prefix
// ("upstreamauthority(<name>): ..."); a plugin's own status keeps its code.
package external
