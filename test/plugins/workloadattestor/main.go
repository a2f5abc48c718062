// Command workloadattestor is an external SPIRE agent WorkloadAttestor plugin
// for tests. It attests a workload by its real uid and gid from
// /proc/<pid>/status, and adds the configured label and the core trust
// domain as selectors, so a test can tell its selectors from a built-in's.
//
// Configuration:
//
//	label = "ext"       # value of the label:<label> selector
//	log_calls = false   # log every Attest at debug (each line crosses to the host)
//
// plus the fault keys of test/plugins/internal/fault; hang and crash act in
// Attest.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(workloadattestorv1.WorkloadAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
