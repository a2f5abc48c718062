// Command credentialcomposer is an external SPIRE server CredentialComposer
// plugin for tests, with visible marks: workload X509-SVIDs get the DNS SAN
// "composed.test" and workload JWT-SVIDs the claim "composed": true. The
// other Compose calls hand back the attributes they were given, which SPIRE
// treats as no change.
//
// It has no configuration of its own beyond the fault keys of
// test/plugins/internal/fault; hang and crash act in every Compose call.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(credentialcomposerv1.CredentialComposerPluginServer(p), configv1.ConfigServiceServer(p))
}
