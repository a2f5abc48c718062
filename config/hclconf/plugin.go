package hclconf

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/hcl/ast"
)

// Position is where something was written: a file and a 1-based line.
type Position struct {
	File string
	Line int
}

// String renders "file:line".
func (p Position) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// Plugin is one block of the plugins section, e.g.
//
//	KeyManager "disk" { plugin_data { keys_path = "..." } }
//
// Its plugin_data stays as HCL until the plugin itself decodes it with
// DecodeData, because only the plugin knows its own keys.
type Plugin struct {
	Type     string // "KeyManager"
	Name     string // "disk"
	Enabled  bool   // enabled = false keeps the block but loads nothing
	Cmd      string // plugin_cmd: path of an external plugin binary
	Args     []string
	Checksum string // plugin_checksum: hex SHA-256 of the binary at Cmd
	DataFile string // plugin_data_file: plugin_data kept in a separate file
	// Data is the body of plugin_data; nil when the block has none.
	Data *ast.ObjectList
	// Pos is where the plugin block starts.
	Pos Position
}

// Label renders the plugin as it is written in the file: KeyManager "disk".
func (p Plugin) Label() string { return fmt.Sprintf("%s %q", p.Type, p.Name) }

// External reports whether the plugin is a separate binary (plugin_cmd set)
// rather than one compiled in.
func (p Plugin) External() bool { return p.Cmd != "" }

// PluginRule says how many enabled plugins of one type a configuration must
// have, and gives an example block to suggest when one is missing.
type PluginRule struct {
	Type    string
	Min     int
	Max     int // negative: no upper bound
	Example string
}

// EnabledPlugins returns the enabled plugins of type typ, in file order.
func EnabledPlugins(plugins []Plugin, typ string) []Plugin {
	var out []Plugin
	for _, p := range plugins {
		if p.Enabled && p.Type == typ {
			out = append(out, p)
		}
	}
	return out
}

// ParsePlugins reads the plugins block of root, in file order. A type not
// in rules is an error, as are duplicate blocks and a count of enabled
// plugins outside a rule's bounds. Plugin names are not checked here: the
// wiring that instantiates plugins knows which exist.
func ParsePlugins(root *Section, rules []PluginRule) []Plugin {
	d := root.d
	block := root.Block("plugins")
	var plugins []Plugin
	if block != nil {
		for _, e := range collectPlugins(d, block, rules) {
			label := fmt.Sprintf("%s %q", e.typ, e.name)
			s := &Section{d: d, path: "plugins." + label, line: e.line, items: e.body}
			plugins = append(plugins, parsePlugin(s, e.typ, e.name))
		}
	}
	checkArity(d, block, plugins, rules)
	return plugins
}

// pluginEntry is one plugin block found in the plugins section, before its
// body is read.
type pluginEntry struct {
	typ, name string
	line      int
	body      []*ast.ObjectItem
	flattened bool
}

// collectPlugins finds the plugin blocks in the three shapes SPIRE files
// use: Type "name" { ... }; Type { name { ... } }; and JSON, whose parser
// flattens {"Type": [{"name": {"plugin_data": {...}}}]} into items keyed
// [Type, name, plugin_data]. Flattened pieces of one plugin are merged;
// a plugin written twice is an error.
func collectPlugins(d *Diagnostics, block *Section, rules []PluginRule) []*pluginEntry {
	var entries []*pluginEntry
	byLabel := make(map[string]*pluginEntry)
	add := func(typ string, it *ast.ObjectItem, keys []*ast.ObjectKey) {
		line := itemLine(it)
		if len(keys) == 0 {
			d.Errorf(line, "plugins."+typ, "plugin name is missing (write %s \"<name>\" { ... })", typ)
			return
		}
		name := keyText(keys[0].Token)
		label := fmt.Sprintf("%s %q", typ, name)
		if name == "" {
			d.Errorf(line, "plugins."+typ, "plugin name is empty (write %s \"<name>\" { ... })", typ)
			return
		}
		var body []*ast.ObjectItem
		flattened := len(keys) > 1
		if flattened {
			body = []*ast.ObjectItem{{Keys: keys[1:], Val: it.Val}}
		} else if ot, ok := it.Val.(*ast.ObjectType); ok {
			body = ot.List.Items
		} else {
			d.Errorf(line, "plugins."+label, "must be a block (write %s { plugin_data { ... } })", label)
			return
		}
		if prev, ok := byLabel[label]; ok {
			if prev.flattened && flattened {
				prev.body = append(prev.body, body...)
				return
			}
			d.Errorf(line, "plugins."+label, "declared more than once (first at line %d; keep one)", prev.line)
			return
		}
		e := &pluginEntry{typ: typ, name: name, line: line, body: body, flattened: flattened}
		byLabel[label] = e
		entries = append(entries, e)
	}
	for _, it := range block.items {
		if len(it.Keys) == 0 {
			continue
		}
		line := itemLine(it)
		typ := keyText(it.Keys[0].Token)
		if !knownType(typ, rules) {
			fix := "use one of " + typeList(rules)
			if alt := suggestType(typ, rules); alt != "" {
				fix = fmt.Sprintf("did you mean %q?", alt)
			}
			d.Errorf(line, "plugins."+typ, "unknown plugin type (%s)", fix)
			continue
		}
		if len(it.Keys) >= 2 {
			add(typ, it, it.Keys[1:])
			continue
		}
		var bodies []*ast.ObjectType
		switch v := it.Val.(type) {
		case *ast.ObjectType:
			bodies = append(bodies, v)
		case *ast.ListType:
			for _, el := range v.List {
				if ot, ok := el.(*ast.ObjectType); ok {
					bodies = append(bodies, ot)
				} else {
					d.Errorf(line, "plugins."+typ, "must hold named plugin blocks (write %s \"<name>\" { ... })", typ)
				}
			}
		default:
			d.Errorf(line, "plugins."+typ, "must be a named block (write %s \"<name>\" { ... })", typ)
		}
		for _, ot := range bodies {
			for _, sub := range ot.List.Items {
				add(typ, sub, sub.Keys)
			}
		}
	}
	return entries
}

func parsePlugin(s *Section, typ, name string) Plugin {
	p := Plugin{Type: typ, Name: name, Enabled: true, Pos: Position{File: s.d.file, Line: s.line}}
	s.Bool("enabled", &p.Enabled)
	s.String("plugin_cmd", &p.Cmd)
	s.Strings("plugin_args", &p.Args)
	s.Parse("plugin_checksum", func(v string) error {
		if b, err := hex.DecodeString(v); err != nil || len(b) != 32 {
			return fmt.Errorf("invalid checksum %q (use the 64 hex digits of the binary's SHA-256, e.g. from sha256sum)", v)
		}
		p.Checksum = v
		return nil
	})
	s.String("plugin_data_file", &p.DataFile)
	p.Data, _ = s.body("plugin_data", "plugin_data { key = \"value\" }")
	s.Finish()
	if p.Data != nil && p.DataFile != "" {
		s.Errorf("plugin_data_file", "plugin_data and plugin_data_file are both set (keep one)")
	}
	if p.Checksum != "" && p.Cmd == "" {
		s.Errorf("plugin_checksum", "set without plugin_cmd (a checksum only applies to an external plugin binary)")
	}
	return p
}

func checkArity(d *Diagnostics, block *Section, plugins []Plugin, rules []PluginRule) {
	blockLine := 0
	if block != nil {
		blockLine = block.line
	}
	for _, r := range rules {
		enabled := EnabledPlugins(plugins, r.Type)
		n := len(enabled)
		switch {
		case n < r.Min:
			need := "at least one"
			if r.Max == 1 {
				need = "exactly one"
			}
			d.Errorf(blockLine, "plugins", "%s %s plugin must be enabled, found %d (add one, e.g. %s)", need, r.Type, n, r.Example)
		case r.Max >= 0 && n > r.Max:
			limit := "at most one"
			if r.Min == 1 && r.Max == 1 {
				limit = "exactly one"
			} else if r.Max != 1 {
				limit = "at most " + strconv.Itoa(r.Max)
			}
			var where []string
			for _, p := range enabled {
				where = append(where, fmt.Sprintf("%q at line %d", p.Name, p.Pos.Line))
			}
			d.Errorf(enabled[r.Max].Pos.Line, "plugins", "%s %s plugin may be enabled, found %d: %s (remove the others or set enabled = false)",
				limit, r.Type, n, strings.Join(where, ", "))
		}
	}
}

func knownType(typ string, rules []PluginRule) bool {
	for _, r := range rules {
		if r.Type == typ {
			return true
		}
	}
	return false
}

func typeList(rules []PluginRule) string {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Type
	}
	return strings.Join(names, ", ")
}

func suggestType(typ string, rules []PluginRule) string {
	for _, r := range rules {
		if strings.EqualFold(r.Type, typ) {
			return r.Type
		}
	}
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Type
	}
	return suggest(typ, names)
}
