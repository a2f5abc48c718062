// Command agentkeymanager is an external SPIRE agent KeyManager plugin for
// tests: keys live in memory, by key ID, as in SPIRE's agent memory key
// manager, and are lost when the plugin exits. The agent keeps its own SVID
// key here under "agent-svid-A" and "agent-svid-B".
//
// Key types: EC_P256, EC_P384, RSA_2048, RSA_4096. Public keys are PKIX DER;
// a key's fingerprint is the hex SHA-256 of that DER, as SPIRE's base key
// manager computes it. GetPublicKey of an unknown ID answers an empty
// response without error, as SPIRE's agent key managers do, so a host is
// tested against what real plugins send.
//
// It has no configuration of its own beyond the fault keys of
// test/plugins/internal/fault; hang and crash act in SignData.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(keymanagerv1.KeyManagerPluginServer(p), configv1.ConfigServiceServer(p))
}
