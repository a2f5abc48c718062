// Command upstreamauthority is an external SPIRE server UpstreamAuthority
// plugin for tests: it signs the server's CA with a root of its own.
//
// Configuration:
//
//	cert_file_path = "/path/root.pem"   # PEM certificate of the root
//	key_file_path  = "/path/root.key"   # PEM key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA)
//
// Both or neither: without them the plugin makes a self-signed EC P-256 root
// ("test upstream root", valid for 30 days) in Configure. The minted CA
// lives for the request's preferred TTL (1h if none), never past the root.
// Both streams send one answer and then stay open until the host closes
// them, as a plugin that would push updates does.
//
// The fault keys of test/plugins/internal/fault are honoured; hang and crash
// act in MintX509CAAndSubscribe and PublishJWTKeyAndSubscribe.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(upstreamauthorityv1.UpstreamAuthorityPluginServer(p), configv1.ConfigServiceServer(p))
}
