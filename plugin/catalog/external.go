package catalog

import (
	"context"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin"
)

// Loader is the External loader of one plugin type on either side: start
// the block's binary through the side's plugin host (which must offer
// service), then adapt its connection to the type's interface.
func Loader[D, T any](service string, host func(D) plugin.Host, adapt func(*plugin.Plugin, D) T) External[D, T] {
	return func(ctx context.Context, b hclconf.Plugin, d D) (T, error) {
		p, err := host(d).LoadBlock(ctx, b, service)
		if err != nil {
			var zero T
			return zero, err
		}
		return adapt(p, d), nil
	}
}
