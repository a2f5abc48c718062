// Command bundlepublisher is an external SPIRE server BundlePublisher plugin
// for tests: it "publishes" each bundle by appending one JSON line (event
// "published", see test/plugins/bundlelog) to a file.
//
// Configuration:
//
//	path = "/tmp/x/published.jsonl"   # required
//
// plus the fault keys of test/plugins/internal/fault; hang and crash act in
// PublishBundle.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(bundlepublisherv1.BundlePublisherPluginServer(p), configv1.ConfigServiceServer(p))
}
