package catalog_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// Greeter is the interface of a made-up plugin type.
type Greeter interface{ Greet() string }

type english struct{ log *slog.Logger }

func (english) Greet() string { return "hello" }

// Deps is what every plugin of a side may need, built once by the wiring.
type Deps struct{ Log *slog.Logger }

// Greeters would be declared once, in a side's catalog package. External
// stays nil until a loader for plugin_cmd binaries of this type exists.
var Greeters = catalog.Table[Deps, Greeter]{
	Type: "Greeter",
	Builtins: []catalog.Builtin[Deps, Greeter]{
		{Name: "english", New: func(_ context.Context, p hclconf.Plugin, d Deps) (Greeter, error) {
			var data struct{} // english takes no plugin_data
			if err := p.DecodeData(&data); err != nil {
				return nil, err
			}
			return english{log: d.Log}, nil
		}},
	},
}

func Example() {
	ctx := context.Background()
	deps := Deps{Log: slog.Default()}
	at := hclconf.Position{File: "greeter.conf", Line: 3}

	g, err := Greeters.Build(ctx, hclconf.Plugin{Type: "Greeter", Name: "english", Enabled: true, Pos: at}, deps)
	fmt.Println(g.Greet(), err)

	_, err = Greeters.Build(ctx, hclconf.Plugin{Type: "Greeter", Name: "french", Enabled: true, Pos: at}, deps)
	fmt.Println(err)

	_, err = Greeters.Build(ctx, hclconf.Plugin{Type: "Greeter", Name: "english", Cmd: "/opt/greeter", Enabled: true, Pos: at}, deps)
	fmt.Println(err)
	// Output:
	// hello <nil>
	// greeter.conf:3: Greeter "french": unknown Greeter plugin "french" (supported: english)
	// greeter.conf:3: Greeter "english": external Greeter plugins (plugin_cmd) are not supported
}
