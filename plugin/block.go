package plugin

import (
	"context"
	"log/slog"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
)

// Host is what a daemon hands every external plugin it loads: its trust
// domain, the host services it offers, and where logs go.
type Host struct {
	TrustDomain  spiffeid.TrustDomain
	HostServices []pluginsdk.ServiceServer
	Log          *slog.Logger
}

// LoadBlock loads the external plugin a plugins block describes
// (plugin_cmd, plugin_args, plugin_checksum, plugin_data or
// plugin_data_file), which must offer service.
func (h Host) LoadBlock(ctx context.Context, p hclconf.Plugin, service string) (*Plugin, error) {
	data, err := p.DataText()
	if err != nil {
		return nil, err
	}
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Load(ctx, Config{
		Type: p.Type, Name: p.Name,
		Cmd: p.Cmd, Args: p.Args, Checksum: p.Checksum,
		Data:         data,
		TrustDomain:  h.TrustDomain,
		Service:      service,
		HostServices: h.HostServices,
		Log:          log,
	})
}
