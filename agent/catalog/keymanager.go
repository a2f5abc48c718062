package catalog

import (
	"context"
	"fmt"

	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
	kmtpm "github.com/spiffe-hw/spire-hw/agent/keymanager/tpm"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// KeyManagers are the KeyManager plugins that hold the agent's own key and
// the keys of the SVIDs it caches.
var KeyManagers = catalog.Table[Deps, keymanager.KeyManager]{
	Type: config.TypeKeyManager,
	Builtins: []catalog.Builtin[Deps, keymanager.KeyManager]{
		{Name: "memory", New: newMemoryKeyManager},
		{Name: "disk", New: newDiskKeyManager},
		{Name: "tpm", New: newTPMKeyManager},
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
		Directory string `hcl:"directory"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.Directory == "" {
		return nil, p.Errorf("directory", "is required")
	}
	km, err := disk.New(data.Directory)
	if err != nil {
		// The "agent: " prefix is what the agent printed before the
		// catalog existed; operators and tests match it.
		return nil, fmt.Errorf("agent: %s: %w", p.Label(), err)
	}
	return km, nil
}

// newTPMKeyManager builds KeyManager "tpm": the agent key lives in the TPM
// at tpm_path and only its wrapped blob in directory (default data_dir).
func newTPMKeyManager(_ context.Context, p hclconf.Plugin, deps Deps) (keymanager.KeyManager, error) {
	var data struct {
		TPMPath   string `hcl:"tpm_path"`
		Directory string `hcl:"directory"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	if data.Directory == "" && deps.Config != nil {
		data.Directory = deps.Config.Agent.DataDir
	}
	if data.Directory == "" {
		return nil, p.Errorf("directory", "is required when the agent has no data_dir")
	}
	km, err := kmtpm.New(data.TPMPath, data.Directory)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", p.Label(), err)
	}
	return km, nil
}
