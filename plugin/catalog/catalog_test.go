package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// widget is a plugin value that records how it was built and closed.
type widget struct {
	from     string // "builtin a", "external /bin/w"
	deps     string
	closed   *[]string
	closeErr error
}

func (w *widget) Close() error {
	*w.closed = append(*w.closed, w.from)
	return w.closeErr
}

// deps stands in for a side's Deps: the tests check it reaches the row.
type deps struct {
	name     string
	closed   *[]string
	closeErr map[string]error // by plugin name
}

var errBoom = errors.New("boom")

func builtin(name string) catalog.Builtin[deps, *widget] {
	return catalog.Builtin[deps, *widget]{Name: name, New: func(_ context.Context, p hclconf.Plugin, d deps) (*widget, error) {
		if p.Name == "broken" {
			return nil, fmt.Errorf("widget %s: %w", p.Name, errBoom)
		}
		return &widget{from: "builtin " + p.Name, deps: d.name, closed: d.closed, closeErr: d.closeErr[p.Name]}, nil
	}}
}

func external(_ context.Context, p hclconf.Plugin, d deps) (*widget, error) {
	return &widget{from: "external " + p.Cmd, deps: d.name, closed: d.closed}, nil
}

func table(ext catalog.External[deps, *widget]) catalog.Table[deps, *widget] {
	return catalog.Table[deps, *widget]{
		Type:     "Widget",
		Builtins: []catalog.Builtin[deps, *widget]{builtin("b"), builtin("a"), builtin("broken")},
		External: ext,
	}
}

func plugin(typ, name, cmd string) hclconf.Plugin {
	return hclconf.Plugin{Type: typ, Name: name, Enabled: true, Cmd: cmd, Pos: hclconf.Position{File: "w.conf", Line: 7}}
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		ext  catalog.External[deps, *widget]
		p    hclconf.Plugin
		from string // the widget built, when no error is expected
		err  string // the whole error text
		// key is the *hclconf.Error key, for errors about the file.
		key string
		is  error
	}{
		{name: "builtin", p: plugin("Widget", "a", ""), from: "builtin a"},
		{name: "builtin with external loader", ext: external, p: plugin("Widget", "b", ""), from: "builtin b"},
		{name: "builtin error", p: plugin("Widget", "broken", ""), err: "widget broken: boom", is: errBoom},
		{name: "unknown name", p: plugin("Widget", "c", ""),
			err: `w.conf:7: Widget "c": unknown Widget plugin "c" (supported: b, a, broken)`, key: `Widget "c"`},
		{name: "unknown name with external loader", ext: external, p: plugin("Widget", "c", ""),
			err: `w.conf:7: Widget "c": unknown Widget plugin "c" (supported: b, a, broken)`, key: `Widget "c"`},
		{name: "external not supported", p: plugin("Widget", "a", "/bin/w"),
			err: `w.conf:7: Widget "a": external Widget plugins (plugin_cmd) are not supported`, key: `Widget "a"`},
		// plugin_cmd wins over a built-in of the same name, as in SPIRE.
		{name: "external shadows builtin", ext: external, p: plugin("Widget", "a", "/bin/w"), from: "external /bin/w"},
		{name: "external unknown name", ext: external, p: plugin("Widget", "zz", "/bin/w"), from: "external /bin/w"},
		{name: "wrong table", ext: external, p: plugin("Gadget", "a", ""),
			err: `catalog: Gadget "a" handed to the Widget table`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var closed []string
			w, err := table(tc.ext).Build(context.Background(), tc.p, deps{name: "the deps", closed: &closed})
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				if w.from != tc.from || w.deps != "the deps" {
					t.Fatalf("built %+v, want from %q with the deps", w, tc.from)
				}
				return
			}
			if err == nil {
				t.Fatalf("Build built %+v, want error %q", w, tc.err)
			}
			if err.Error() != tc.err {
				t.Fatalf("error:\n got %q\nwant %q", err, tc.err)
			}
			var ce *hclconf.Error
			if got := errors.As(err, &ce); got != (tc.key != "") {
				t.Fatalf("errors.As(*hclconf.Error) = %v, want %v", got, tc.key != "")
			}
			if ce != nil && ce.Key != tc.key {
				t.Fatalf("key %q, want %q", ce.Key, tc.key)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

func TestBuildAll(t *testing.T) {
	closeErr := errors.New("close failed")
	for _, tc := range []struct {
		name     string
		ps       []hclconf.Plugin
		closeErr map[string]error
		built    []string
		closed   []string // in the order Close was called
		err      string
		is       []error
	}{
		{name: "none"},
		{name: "in order", ps: []hclconf.Plugin{plugin("Widget", "a", ""), plugin("Widget", "b", "")},
			built: []string{"builtin a", "builtin b"}},
		{name: "closes the built on build error",
			ps:     []hclconf.Plugin{plugin("Widget", "a", ""), plugin("Widget", "b", ""), plugin("Widget", "broken", ""), plugin("Widget", "a", "")},
			closed: []string{"builtin b", "builtin a"}, err: "widget broken: boom", is: []error{errBoom}},
		{name: "closes the built on unknown name",
			ps:     []hclconf.Plugin{plugin("Widget", "a", ""), plugin("Widget", "nope", "")},
			closed: []string{"builtin a"}, err: `w.conf:7: Widget "nope": unknown Widget plugin "nope" (supported: b, a, broken)`},
		{name: "first fails, nothing to close", ps: []hclconf.Plugin{plugin("Widget", "broken", ""), plugin("Widget", "a", "")},
			err: "widget broken: boom", is: []error{errBoom}},
		{name: "close error joined",
			ps:       []hclconf.Plugin{plugin("Widget", "a", ""), plugin("Widget", "b", ""), plugin("Widget", "broken", "")},
			closeErr: map[string]error{"a": closeErr},
			closed:   []string{"builtin b", "builtin a"},
			err:      "widget broken: boom\ncatalog: close the Widget plugins built before Widget \"broken\": close failed",
			is:       []error{errBoom, closeErr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var closed []string
			ws, err := table(nil).BuildAll(context.Background(), tc.ps, deps{closed: &closed, closeErr: tc.closeErr})
			if !slices.Equal(closed, tc.closed) {
				t.Fatalf("closed %q, want %q", closed, tc.closed)
			}
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error:\n got %v\nwant %s", err, tc.err)
				}
				for _, target := range tc.is {
					if !errors.Is(err, target) {
						t.Fatalf("error %v does not wrap %v", err, target)
					}
				}
				if ws != nil {
					t.Fatalf("BuildAll returned %d plugins with its error", len(ws))
				}
				return
			}
			if err != nil {
				t.Fatalf("BuildAll: %v", err)
			}
			var built []string
			for _, w := range ws {
				built = append(built, w.from)
			}
			if !slices.Equal(built, tc.built) {
				t.Fatalf("built %q, want %q", built, tc.built)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got, want := table(nil).Names(), []string{"b", "a", "broken"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
	if got := (catalog.Table[deps, *widget]{Type: "Widget"}).Names(); len(got) != 0 {
		t.Fatalf("Names() of an empty table = %q", got)
	}
}

// plain has no Close method; Close must skip it.
type plain struct{}

func TestClose(t *testing.T) {
	var closed []string
	e1, e2 := errors.New("e1"), errors.New("e2")
	vs := []any{
		&widget{from: "first", closed: &closed, closeErr: e1},
		nil,
		plain{},
		&widget{from: "second", closed: &closed},
		&widget{from: "third", closed: &closed, closeErr: e2},
	}
	err := catalog.Close(vs...)
	if want := []string{"third", "second", "first"}; !slices.Equal(closed, want) {
		t.Fatalf("closed %q, want %q (last built first)", closed, want)
	}
	if !errors.Is(err, e1) || !errors.Is(err, e2) || !strings.HasPrefix(err.Error(), "e2") {
		t.Fatalf("Close error %q, want e2 then e1", err)
	}
	if err := catalog.Close[any](); err != nil {
		t.Fatalf("Close of nothing: %v", err)
	}
}

// A type with no built-ins says what the operator can do instead of
// listing nothing.
func TestBuildWithoutBuiltins(t *testing.T) {
	for _, tc := range []struct {
		name string
		ext  catalog.External[deps, *widget]
		err  string
	}{
		{"external only", external, `w.conf:7: Widget "c": unknown Widget plugin "c" (none is built in; set plugin_cmd to load an external one)`},
		{"nothing", nil, `w.conf:7: Widget "c": unknown Widget plugin "c" (no Widget plugin is supported yet)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := catalog.Table[deps, *widget]{Type: "Widget", External: tc.ext}
			var closed []string
			_, err := tb.Build(context.Background(), plugin("Widget", "c", ""), deps{closed: &closed})
			if err == nil || err.Error() != tc.err {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.err)
			}
		})
	}
}
