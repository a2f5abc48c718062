package catalog

import (
	"context"
	"fmt"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	uppkcs11 "github.com/spiffe-hw/spire-hw/server/ca/upstream/pkcs11"
	"github.com/spiffe-hw/spire-hw/server/config"
)

// UpstreamAuthorities are the UpstreamAuthority plugins that sign the
// server's CA certificates; without one the CA is self-signed.
var UpstreamAuthorities = catalog.Table[Deps, upstream.Authority]{
	Type: config.TypeUpstreamAuthority,
	Builtins: []catalog.Builtin[Deps, upstream.Authority]{
		{Name: "disk", New: newDiskUpstream},
		{Name: "pkcs11", New: newPKCS11Upstream},
	},
}

func newDiskUpstream(_ context.Context, p hclconf.Plugin, _ Deps) (upstream.Authority, error) {
	var data struct {
		CertFilePath   string `hcl:"cert_file_path"`
		KeyFilePath    string `hcl:"key_file_path"`
		BundleFilePath string `hcl:"bundle_file_path"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.CertFilePath == "" || data.KeyFilePath == "" {
		return nil, p.Errorf("cert_file_path", "cert_file_path and key_file_path are required")
	}
	u, err := upstream.NewDisk(data.CertFilePath, data.KeyFilePath, data.BundleFilePath)
	if err != nil {
		return nil, fmt.Errorf("server: %s: %w", p.Label(), err)
	}
	return u, nil
}

func newPKCS11Upstream(_ context.Context, p hclconf.Plugin, deps Deps) (upstream.Authority, error) {
	u, err := uppkcs11.FromPlugin(p, deps.Log.With("subsystem", "upstream"))
	if err != nil {
		return nil, err
	}
	return u, nil
}
