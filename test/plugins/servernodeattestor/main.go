// Command servernodeattestor is the server half of a test NodeAttestor pair
// (see agentnodeattestor): it reads the node's name, sends one 32-byte random
// challenge and accepts the agent if the answer is HMAC-SHA256 of it under
// the shared secret. The agent gets the ID
// spiffe://<trust domain>/spire/agent/hmac/<node> and the selector
// node:<node>, and may reattest.
//
// Configuration:
//
//	secret = "..."            # required; never logged
//	use_agent_store = true    # also report seen_before:true|false from the
//	                          # AgentStore host service
//
// plus the fault keys of test/plugins/internal/fault; hang and crash act in
// Attest. The plugin needs the AgentStore host service to load, as SPIRE's
// TOFU attestors do; every SPIRE server offers it.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(nodeattestorv1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
