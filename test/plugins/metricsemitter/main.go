// Command metricsemitter is an external SPIRE server Notifier plugin for
// tests of the Metrics host service: when configured, and again on every
// bundle event, it emits one metric of each kind through the host's
// Metrics service, under key prefix:
//
//	<prefix>.calls    counter, label method = configure | notify
//	<prefix>.keys     gauge (4)
//	<prefix>.size     sample (2.5)
//	<prefix>.latency  MeasureSince a second ago
//	<prefix>.emitted  EmitKey (7)
//
// Configuration:
//
//	prefix  = "my_plugin"   # default "metricsemitter"
//	hostile = true          # also emit what would break a sink: a summary
//	                        # labelled quantile, a name Prometheus refuses,
//	                        # a negative counter, a key reused as another kind
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
