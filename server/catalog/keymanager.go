package catalog

import (
	"context"
	"fmt"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/server/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/server/keymanager/memory"
	kmpkcs11 "github.com/spiffe-hw/spire-hw/server/keymanager/pkcs11"
)

// KeyManagers are the KeyManager plugins that hold the CA's signing keys.
var KeyManagers = catalog.Table[Deps, keymanager.KeyManager]{
	Type: config.TypeKeyManager,
	Builtins: []catalog.Builtin[Deps, keymanager.KeyManager]{
		{Name: "memory", New: newMemoryKeyManager},
		{Name: "disk", New: newDiskKeyManager},
		{Name: "pkcs11", New: newPKCS11KeyManager},
	},
}

func newMemoryKeyManager(_ context.Context, p hclconf.Plugin, _ Deps) (keymanager.KeyManager, error) {
	var data struct{}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	return memory.New(), nil
}

func newDiskKeyManager(_ context.Context, p hclconf.Plugin, _ Deps) (keymanager.KeyManager, error) {
	var data struct {
		KeysPath string `hcl:"keys_path"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.KeysPath == "" {
		return nil, p.Errorf("keys_path", "is required")
	}
	km, err := disk.New(data.KeysPath)
	if err != nil {
		return nil, fmt.Errorf("server: %s: %w", p.Label(), err)
	}
	return km, nil
}

func newPKCS11KeyManager(_ context.Context, p hclconf.Plugin, deps Deps) (keymanager.KeyManager, error) {
	km, err := kmpkcs11.FromPlugin(p, deps.Log.With("subsystem", "keymanager"))
	if err != nil {
		return nil, err
	}
	return km, nil
}
