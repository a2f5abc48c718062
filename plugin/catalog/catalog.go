package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// Builtin is one compiled-in plugin of a type.
type Builtin[D, T any] struct {
	// Name is the plugin name as written in the configuration, e.g. the
	// "disk" of KeyManager "disk".
	Name string
	// New decodes the plugin's plugin_data and builds it. ctx bounds the
	// work done while building (a database ping, migrations), not the
	// plugin's lifetime.
	New func(ctx context.Context, p hclconf.Plugin, deps D) (T, error)
}

// External loads plugin_cmd plugins of a type; nil means the type cannot be
// external yet.
type External[D, T any] func(ctx context.Context, p hclconf.Plugin, deps D) (T, error)

// Table is every plugin of one type.
type Table[D, T any] struct {
	// Type is the plugin type as written in the plugins block, e.g.
	// "KeyManager".
	Type string
	// Builtins are in the order the "supported" list of an error shows them.
	Builtins []Builtin[D, T]
	// External builds plugins whose block sets plugin_cmd.
	External External[D, T]
}

// Build builds plugin p. A block with plugin_cmd goes to the External
// loader even when its name matches a built-in, as in SPIRE: the operator
// asked for that binary.
func (t Table[D, T]) Build(ctx context.Context, p hclconf.Plugin, deps D) (T, error) {
	var zero T
	if p.Type != t.Type {
		// The caller picked the wrong table: a bug, not a configuration
		// mistake, so it does not point at the file.
		return zero, fmt.Errorf("catalog: %s handed to the %s table", p.Label(), t.Type)
	}
	if p.External() {
		if t.External == nil {
			return zero, p.Errorf("", "external %s plugins (plugin_cmd) are not supported", t.Type)
		}
		return t.External(ctx, p, deps)
	}
	for _, b := range t.Builtins {
		if b.Name == p.Name {
			return b.New(ctx, p, deps)
		}
	}
	switch names := t.Names(); {
	case len(names) > 0:
		return zero, p.Errorf("", "unknown %s plugin %q (supported: %s)", t.Type, p.Name, strings.Join(names, ", "))
	case t.External != nil:
		return zero, p.Errorf("", "unknown %s plugin %q (none is built in; set plugin_cmd to load an external one)", t.Type, p.Name)
	default:
		return zero, p.Errorf("", "unknown %s plugin %q (no %s plugin is supported yet)", t.Type, p.Name, t.Type)
	}
}

// BuildAll builds ps in order. If one fails, the plugins already built are
// closed (those with a Close() error method), so that a half-built list
// holds no processes or kernel resources; the build error is returned as
// it is, joined with the close error only if closing failed.
func (t Table[D, T]) BuildAll(ctx context.Context, ps []hclconf.Plugin, deps D) ([]T, error) {
	out := make([]T, 0, len(ps))
	for _, p := range ps {
		v, err := t.Build(ctx, p, deps)
		if err != nil {
			if cerr := Close(out...); cerr != nil {
				return nil, errors.Join(err, fmt.Errorf("catalog: close the %s plugins built before %s: %w", t.Type, p.Label(), cerr))
			}
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Names lists the built-in names in declaration order.
func (t Table[D, T]) Names() []string {
	names := make([]string, len(t.Builtins))
	for i, b := range t.Builtins {
		names[i] = b.Name
	}
	return names
}

// Close closes every value of vs that has a Close() error method, the last
// built first since later plugins may use earlier ones, and joins their
// errors. Nil values and values without Close are skipped.
func Close[T any](vs ...T) error {
	var errs []error
	for i := len(vs) - 1; i >= 0; i-- {
		if c, ok := any(vs[i]).(interface{ Close() error }); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
