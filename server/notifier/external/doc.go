// Package external makes a Notifier plugin written against the SPIRE
// plugin SDK (spire.plugin.server.notifier.v1) a notifier.Notifier, as
// SPIRE's facade does: NotifyBundleLoaded is the plugin's NotifyAndAdvise,
// NotifyBundleUpdated its Notify.
//
// Errors are gRPC statuses with SPIRE's prefix ("notifier(<name>): ...");
// a plugin's own status keeps its code.
package external
