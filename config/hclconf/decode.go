package hclconf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/printer"
)

// data returns the plugin_data body and the file it came from, reading
// plugin_data_file when that is how the data was given.
func (p Plugin) data() (*ast.ObjectList, string, error) {
	if p.DataFile == "" {
		return p.Data, p.Pos.File, nil
	}
	raw, err := os.ReadFile(p.DataFile)
	if err != nil {
		return nil, p.DataFile, &Error{File: p.Pos.File, Line: p.Pos.Line, Key: p.dataKey(""),
			Msg: fmt.Sprintf("%s: cannot read plugin_data_file: %v (check plugin_data_file)", p.Label(), err)}
	}
	d := NewDiagnostics(p.DataFile)
	root := Parse(d, raw, false)
	if root == nil {
		return nil, p.DataFile, d.Err()
	}
	return &ast.ObjectList{Items: root.items}, p.DataFile, nil
}

func (p Plugin) dataKey(key string) string {
	if key == "" {
		return p.Label() + ".plugin_data"
	}
	return p.Label() + ".plugin_data." + key
}

// DecodeData decodes plugin_data (or the file named by plugin_data_file)
// into v, a pointer to a struct whose fields carry `hcl:"name"` tags, and
// rejects keys that match no field, at any depth, naming the file, line,
// plugin and key. Without plugin data, v is left unchanged.
//
// Durations in plugin data are strings: parse them with ParseDuration so the
// error points at the right line.
func (p Plugin) DecodeData(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("hclconf: DecodeData needs a non-nil pointer, got %T", v)
	}
	list, file, err := p.data()
	if err != nil || list == nil {
		return err
	}
	d := NewDiagnostics(file)
	checkKeys(d, list, rv.Type(), p.dataKey(""), 0)
	if d.HasErrors() {
		return d.Err()
	}
	if err := decodeObject(v, list); err != nil {
		line := p.Pos.Line
		var pe *parser.PosError
		if errors.As(err, &pe) {
			if pe.Pos.Line > 0 {
				line = pe.Pos.Line
			}
			err = pe.Err
		}
		msg := strings.ReplaceAll(err.Error(), "root.", "")
		d.Errorf(line, p.dataKey(""), "%s (check the value types against the plugin's documentation)", msg)
		return d.Err()
	}
	return nil
}

// decodeObject runs the HCL decoder, turning its panics (it calls
// token.Value, which panics on malformed tokens) into errors.
func decodeObject(v any, list *ast.ObjectList) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed value (%v)", r)
		}
	}()
	return hcl.DecodeObject(v, list)
}

// DataText returns plugin_data as HCL text, which is what SPIRE hands an
// external plugin in its Configure call, or the contents of plugin_data_file.
func (p Plugin) DataText() (text string, err error) {
	if p.DataFile != "" {
		raw, err := os.ReadFile(p.DataFile)
		if err != nil {
			return "", fmt.Errorf("hclconf: %s: read plugin_data_file: %w", p.Label(), err)
		}
		return string(raw), nil
	}
	if p.Data == nil {
		return "", nil
	}
	defer func() {
		if r := recover(); r != nil {
			text, err = "", fmt.Errorf("hclconf: %s: print plugin_data: %v", p.Label(), r)
		}
	}()
	var buf bytes.Buffer
	if err := printer.Fprint(&buf, p.Data); err != nil {
		return "", fmt.Errorf("hclconf: %s: print plugin_data: %w", p.Label(), err)
	}
	return buf.String(), nil
}

// Errorf returns an *Error about key (dotted, inside plugin_data) located at
// the key's line, so a plugin validating its own settings reports them like
// every other configuration error.
func (p Plugin) Errorf(key, format string, args ...any) error {
	file, line := p.Pos.File, p.Pos.Line
	if list, f, err := p.data(); err == nil && list != nil {
		file = f
		if l := findLine(list, strings.Split(key, ".")); l > 0 {
			line = l
		}
	}
	full := p.dataKey(key)
	if key == "" {
		// An error about the plugin itself (say, an unknown name) points at
		// its block, not at plugin_data.
		full = p.Label()
	}
	return &Error{File: file, Line: line, Key: full, Msg: full + ": " + fmt.Sprintf(format, args...)}
}

// ParseDuration parses a duration that the plugin decoded from plugin_data
// as a string, reporting a bad value at key's line.
func (p Plugin) ParseDuration(key, value string) (time.Duration, error) {
	d, err := ParseDuration(value)
	if err != nil {
		return 0, p.Errorf(key, "%v", err)
	}
	if d < 0 {
		return 0, p.Errorf(key, "must not be negative, got %q", value)
	}
	return d, nil
}

func findLine(list *ast.ObjectList, path []string) int {
	for _, it := range list.Items {
		if len(it.Keys) == 0 || !strings.EqualFold(keyText(it.Keys[0].Token), path[0]) {
			continue
		}
		if len(path) == 1 {
			return itemLine(it)
		}
		if ot, ok := it.Val.(*ast.ObjectType); ok {
			return findLine(ot.List, path[1:])
		}
		return itemLine(it)
	}
	return 0
}

// hclField is one key a struct accepts, as the HCL decoder matches it.
type hclField struct {
	name string
	typ  reflect.Type
}

// hclFields lists the keys the HCL decoder would fill in struct type t,
// following its tag rules: "-" skips, ",squash" flattens an embedded struct,
// ",key", ",decodedFields" and ",unusedKeys" are not keys.
func hclFields(t reflect.Type, depth int) []hclField {
	var out []hclField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		parts := strings.Split(f.Tag.Get("hcl"), ",")
		if parts[0] == "-" {
			continue
		}
		opts := parts[1:]
		has := func(o string) bool {
			for _, x := range opts {
				if x == o {
					return true
				}
			}
			return false
		}
		if f.Anonymous && has("squash") && f.Type.Kind() == reflect.Struct && depth < 16 {
			out = append(out, hclFields(f.Type, depth+1)...)
			continue
		}
		if !f.IsExported() || has("key") || has("decodedFields") || has("unusedKeys") {
			continue
		}
		name := parts[0]
		if name == "" {
			name = f.Name
		}
		out = append(out, hclField{name: name, typ: f.Type})
	}
	return out
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// checkKeys reports every key in list that no field of struct type t
// accepts, then descends into nested blocks. Maps and interface fields take
// any key, so what is inside them is not checked.
func checkKeys(d *Diagnostics, list *ast.ObjectList, t reflect.Type, path string, depth int) {
	t = deref(t)
	if t.Kind() != reflect.Struct || depth > 32 {
		return
	}
	fields := hclFields(t, 0)
	for _, it := range list.Items {
		if len(it.Keys) == 0 {
			continue
		}
		name := keyText(it.Keys[0].Token)
		var field *hclField
		for i := range fields {
			if strings.EqualFold(fields[i].name, name) {
				field = &fields[i]
				break
			}
		}
		if field == nil {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.name
			}
			fix := "remove it; this plugin accepts no keys here"
			if alt := suggest(name, names); alt != "" {
				fix = fmt.Sprintf("did you mean %q?", alt)
			} else if len(names) > 0 {
				fix = "known keys: " + strings.Join(names, ", ")
			}
			d.Errorf(itemLine(it), path+"."+name, "unknown key (%s)", fix)
			continue
		}
		if len(it.Keys) > 1 {
			continue // labelled block: labels become map keys or ",key" fields
		}
		checkValue(d, it.Val, field.typ, path+"."+field.name, depth+1)
	}
}

func checkValue(d *Diagnostics, val ast.Node, t reflect.Type, path string, depth int) {
	t = deref(t)
	switch v := val.(type) {
	case *ast.ObjectType:
		switch t.Kind() {
		case reflect.Struct:
			checkKeys(d, v.List, t, path, depth)
		case reflect.Slice, reflect.Array:
			checkKeys(d, v.List, t.Elem(), path, depth)
		case reflect.Map:
			for _, sub := range v.List.Items {
				if len(sub.Keys) == 1 {
					checkValue(d, sub.Val, t.Elem(), path+"."+keyText(sub.Keys[0].Token), depth+1)
				}
			}
		}
	case *ast.ListType:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for _, el := range v.List {
				checkValue(d, el, t.Elem(), path, depth+1)
			}
		}
	}
}
