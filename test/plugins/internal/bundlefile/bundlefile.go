// Package bundlefile is what the notifier and bundlepublisher test plugins
// share: both take a path in their HCL configuration and append a bundlelog
// line there for each bundle the host hands them. Only the service each
// serves, and the event names, differ.
package bundlefile

import (
	"sync"

	"github.com/spiffe-hw/spire-hw/test/plugins/bundlelog"
	"github.com/spiffe-hw/spire-hw/test/plugins/internal/fault"
	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// config is the plugins' HCL configuration, beside the fault keys.
type config struct {
	Path string `hcl:"path"`
}

// settings is what Configure leaves for Append.
type settings struct {
	path   string
	faults fault.Faults
}

// File is a plugin's configured bundle log. The zero value is not
// configured. It is safe for concurrent use.
type File struct {
	mu  sync.RWMutex
	set *settings
}

// Configure applies the plugin's configuration: path is required, and the
// fault keys of test/plugins/internal/fault apply. It returns what it
// applied, for the plugin to log.
func (f *File) Configure(req *configv1.ConfigureRequest) (path string, faults fault.Faults, err error) {
	var cfg config
	faults, err = fault.Configure(req, &cfg)
	if err != nil {
		return "", fault.Faults{}, err
	}
	if cfg.Path == "" {
		return "", fault.Faults{}, status.Error(codes.InvalidArgument, "path is required")
	}
	f.mu.Lock()
	f.set = &settings{path: cfg.Path, faults: faults}
	f.mu.Unlock()
	return cfg.Path, faults, nil
}

// Append records event for bundle as one bundlelog line, once the
// configured hang or crash fault has acted.
func (f *File) Append(event string, bundle *types.Bundle) error {
	f.mu.RLock()
	set := f.set
	f.mu.RUnlock()
	if set == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	set.faults.Serve()
	if bundle == nil {
		return status.Errorf(codes.InvalidArgument, "%s event has no bundle", event)
	}
	if err := bundlelog.Append(set.path, event, bundle); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}
