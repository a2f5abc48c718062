// Command svidstore is an external SPIRE agent SVIDStore plugin for tests: it
// stores a record of each X509-SVID as a JSON file in a directory, never the
// private key, so a test can see what the agent stored and deleted.
//
// PutX509SVID writes <dir>/<sanitized SPIFFE ID>.json (atomically: a temp
// file renamed into place) holding the SPIFFE ID, the metadata, the SHA-256
// of each certificate of the chain and the expiry. DeleteX509SVID carries
// only metadata (the SDK's request has no SPIFFE ID), so it removes every
// record whose metadata is the same set; none is not an error, as SPIRE's
// stores treat an already deleted secret.
//
// Configuration:
//
//	dir = "/tmp/x/svids"   # required; must exist
//
// plus the fault keys of test/plugins/internal/fault; hang and crash act in
// PutX509SVID and DeleteX509SVID.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func main() {
	p := New()
	pluginmain.Serve(svidstorev1.SVIDStorePluginServer(p), configv1.ConfigServiceServer(p))
}
