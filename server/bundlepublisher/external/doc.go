// Package external makes a BundlePublisher plugin written against the SPIRE
// plugin SDK (spire.plugin.server.bundlepublisher.v1) a
// bundlepublisher.Publisher, as SPIRE's facade does. It also holds the
// conversion of a stored bundle (the API SDK's types.Bundle) to the plugin
// SDK's, which every bundle-consuming plugin type uses.
//
// Errors are gRPC statuses with SPIRE's prefix
// ("bundlepublisher(<name>): ..."); a plugin's own status keeps its code.
package external
