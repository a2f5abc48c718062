// Command notifier is an external SPIRE server Notifier plugin for tests: it
// appends one JSON line per bundle event to a file (see
// test/plugins/bundlelog), "loaded" for BundleLoaded through
// NotifyAndAdvise and "updated" for BundleUpdated through Notify.
//
// Configuration:
//
//	path = "/tmp/x/notifier.jsonl"   # required
//
// plus the fault keys of test/plugins/internal/fault; hang and crash act in
// Notify and NotifyAndAdvise.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(notifierv1.NotifierPluginServer(p), configv1.ConfigServiceServer(p))
}
