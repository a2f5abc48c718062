// Package external makes a BundlePublisher plugin written against the SPIRE
// plugin SDK (spire.plugin.server.bundlepublisher.v1) a
// bundlepublisher.Publisher, as SPIRE's facade does. The bundle it sends is
// converted and checked by package pluginbundle.
//
// Errors are gRPC statuses with SPIRE's prefix
// ("bundlepublisher(<name>): ..."); a plugin's own status keeps its code.
package external
