// Command agentnodeattestor is the agent half of a test NodeAttestor pair
// (see servernodeattestor): it sends the node's name and answers each server
// challenge with HMAC-SHA256 under a shared secret.
//
// Configuration:
//
//	node_name = "node-1"   # required
//	secret = "..."         # required; never logged
//
// plus the fault keys of test/plugins/internal/fault; hang and crash act in
// AidAttestation.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(nodeattestorv1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
