package catalog

import (
	"log/slog"

	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// Deps is what a server plugin may need from the server that builds it.
type Deps struct {
	// Config is the whole server configuration; rows read the trust domain
	// from it.
	Config *config.Config
	// DataStore is the open datastore, for node attestors that look up or
	// record nodes. It is nil while the DataStore itself is being built.
	DataStore datastore.DataStore
	// Log is the server's logger; each row adds its subsystem.
	Log *slog.Logger
	// Host loads external plugins (plugin_cmd) with the server's trust
	// domain and host services.
	Host plugin.Host
}
