package hclconf

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/parser"
	hclstrconv "github.com/hashicorp/hcl/hcl/strconv"
	"github.com/hashicorp/hcl/hcl/token"
)

// Parse parses the text of a configuration file (HCL, or JSON as SPIRE also
// accepts) and returns its top level as a Section. With expandEnv, $VAR and
// ${VAR} are replaced from the environment before parsing, like SPIRE's
// -expandEnv. A syntax error is recorded in d and Parse returns nil.
func Parse(d *Diagnostics, data []byte, expandEnv bool) *Section {
	if expandEnv {
		data = []byte(os.ExpandEnv(string(data)))
	}
	list, err := parseList(data)
	if err != nil {
		line := 0
		var pe *parser.PosError
		if errors.As(err, &pe) {
			line = pe.Pos.Line
			err = pe.Err
		}
		d.errs = append(d.errs, &Error{File: d.file, Line: line,
			Msg: fmt.Sprintf("syntax error: %v (check the braces, quotes and \"=\" around this line)", err)})
		return nil
	}
	return &Section{d: d, line: 1, items: list.Items}
}

// parseList runs the HCL parser, turning a panic inside it into an error: the
// parser is third-party code and a config file must never crash the process.
func parseList(data []byte) (list *ast.ObjectList, err error) {
	defer func() {
		if r := recover(); r != nil {
			list, err = nil, fmt.Errorf("malformed input (%v)", r)
		}
	}()
	f, err := hcl.ParseBytes(data)
	if err != nil {
		return nil, err
	}
	l, ok := f.Node.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("the top level must be a list of blocks, found %T", f.Node)
	}
	return l, nil
}

// Section is one HCL block (or the top level of a file). Each getter looks up
// a key, converts it and records an error at the key's line when the value is
// wrong; Finish then rejects every key no getter asked for.
type Section struct {
	d     *Diagnostics
	path  string // dotted path of this block, "" at the top level
	line  int
	items []*ast.ObjectItem
	used  map[*ast.ObjectItem]bool
	known []string
}

// Path is the dotted key of this block ("server", "plugins.KeyManager \"disk\"").
func (s *Section) Path() string { return s.path }

// Line is the line where this block starts.
func (s *Section) Line() int { return s.line }

// Diagnostics is the collector this section reports into.
func (s *Section) Diagnostics() *Diagnostics { return s.d }

// Key returns the dotted path of key inside this section.
func (s *Section) Key(key string) string {
	if s.path == "" {
		return key
	}
	return s.path + "." + key
}

// Errorf records an error about key at its line, or at the section's line
// when the key is absent.
func (s *Section) Errorf(key, format string, args ...any) {
	line := s.line
	if it := s.find(key); it != nil {
		line = itemLine(it)
	}
	s.d.Errorf(line, s.Key(key), format, args...)
}

// Has reports whether key is present, without marking it as used.
func (s *Section) Has(key string) bool { return s.find(key) != nil }

// LineOf returns the line of key, or 0 when it is absent.
func (s *Section) LineOf(key string) int {
	if it := s.find(key); it != nil {
		return itemLine(it)
	}
	return 0
}

// find returns the first item named key (case-insensitively, as SPIRE's HCL
// decoder matches keys).
func (s *Section) find(key string) *ast.ObjectItem {
	for _, it := range s.items {
		if len(it.Keys) > 0 && strings.EqualFold(keyText(it.Keys[0].Token), key) {
			return it
		}
	}
	return nil
}

// take marks key as known and used and returns its single item; a key set
// more than once is an error because HCL would silently keep one of them.
func (s *Section) take(key string) *ast.ObjectItem {
	s.known = append(s.known, key)
	var found *ast.ObjectItem
	for _, it := range s.items {
		if len(it.Keys) == 0 || !strings.EqualFold(keyText(it.Keys[0].Token), key) {
			continue
		}
		if s.used == nil {
			s.used = make(map[*ast.ObjectItem]bool)
		}
		s.used[it] = true
		if found == nil {
			found = it
			continue
		}
		s.d.Errorf(itemLine(it), s.Key(key), "set more than once (first at line %d; keep one)", itemLine(found))
	}
	return found
}

// scalar returns the literal value of key as text, or ok=false when the key
// is absent or (after recording an error) not a plain value.
func (s *Section) scalar(key, want string) (text string, tok token.Type, line int, ok bool) {
	it := s.take(key)
	if it == nil {
		return "", 0, 0, false
	}
	line = itemLine(it)
	lit, isLit := it.Val.(*ast.LiteralType)
	if len(it.Keys) != 1 || !isLit {
		s.d.Errorf(line, s.Key(key), "must be %s, not %s (write %s = <value>)", want, describe(it), key)
		return "", 0, line, false
	}
	text, err := literalText(lit.Token)
	if err != nil {
		s.d.Errorf(line, s.Key(key), "%v", err)
		return "", 0, line, false
	}
	return text, lit.Token.Type, line, true
}

// String reads a string value into dst; numbers are accepted as their text,
// as SPIRE's decoder does. It reports whether the key was present and valid.
func (s *Section) String(key string, dst *string) bool {
	text, typ, line, ok := s.scalar(key, "a string")
	if !ok {
		return false
	}
	if typ == token.BOOL {
		s.d.Errorf(line, s.Key(key), "must be a string, not a boolean (quote the value)")
		return false
	}
	*dst = text
	return true
}

// Parse reads a string value and hands it to parse; an error from parse is
// recorded at the key's line. It reports whether the value was accepted.
func (s *Section) Parse(key string, parse func(string) error) bool {
	var text string
	if !s.String(key, &text) {
		return false
	}
	if err := parse(text); err != nil {
		s.d.Errorf(s.LineOf(key), s.Key(key), "%v", err)
		return false
	}
	return true
}

// Bool reads true/false (also the strings "true"/"false") into dst.
func (s *Section) Bool(key string, dst *bool) bool {
	text, _, line, ok := s.scalar(key, "a boolean")
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(text)
	if err != nil {
		s.d.Errorf(line, s.Key(key), "invalid boolean %q (use true or false)", text)
		return false
	}
	*dst = b
	return true
}

// Port reads a TCP port written as a number or a string into dst.
func (s *Section) Port(key string, dst *int) bool {
	return s.Parse(key, func(v string) error {
		p, err := ParsePort(v)
		*dst = p
		return err
	})
}

// Duration reads a Go-syntax duration string into dst; negative values are
// rejected because no SPIRE duration is meaningful below zero.
func (s *Section) Duration(key string, dst *time.Duration) bool {
	return s.Parse(key, func(v string) error {
		d, err := ParseDuration(v)
		if err != nil {
			return err
		}
		if d < 0 {
			return fmt.Errorf("must not be negative, got %q", v)
		}
		*dst = d
		return nil
	})
}

// PositiveInt reads a whole number greater than zero (written as a number
// or a string) into dst: for caps, where the way to keep the default is to
// leave the key out.
func (s *Section) PositiveInt(key string, dst *int) bool {
	return s.Parse(key, func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return fmt.Errorf("must be a whole number greater than zero, got %q (remove it to use the default)", v)
		}
		*dst = n
		return nil
	})
}

// PositiveDuration reads a duration greater than zero into dst: for
// timeouts, where zero would mean none and the way to keep the default is
// to leave the key out.
func (s *Section) PositiveDuration(key string, dst *time.Duration) bool {
	var d time.Duration
	if !s.Duration(key, &d) {
		return false
	}
	if d == 0 {
		s.Errorf(key, "must be greater than zero (remove it to use the default)")
		return false
	}
	*dst = d
	return true
}

// Strings reads a list of strings into dst; a single string is taken as a
// one-element list.
func (s *Section) Strings(key string, dst *[]string) bool {
	it := s.take(key)
	if it == nil {
		return false
	}
	line := itemLine(it)
	var out []string
	switch v := it.Val.(type) {
	case *ast.LiteralType:
		text, err := literalText(v.Token)
		if err != nil || v.Token.Type == token.BOOL {
			s.d.Errorf(line, s.Key(key), "must be a list of strings (write %s = [\"a\", \"b\"])", key)
			return false
		}
		out = []string{text}
	case *ast.ListType:
		for _, el := range v.List {
			lit, ok := el.(*ast.LiteralType)
			var text string
			var err error
			if ok {
				text, err = literalText(lit.Token)
			}
			if !ok || err != nil || lit.Token.Type == token.BOOL {
				s.d.Errorf(line, s.Key(key), "must be a list of strings (write %s = [\"a\", \"b\"])", key)
				return false
			}
			out = append(out, text)
		}
	default:
		s.d.Errorf(line, s.Key(key), "must be a list of strings, not %s (write %s = [\"a\", \"b\"])", describe(it), key)
		return false
	}
	*dst = out
	return true
}

// Block returns the nested block named key, or nil when it is absent or
// (after recording an error) is not a block.
func (s *Section) Block(key string) *Section {
	list, line := s.body(key, key+" { ... }")
	if list == nil {
		return nil
	}
	return &Section{d: s.d, path: s.Key(key), line: line, items: list.Items}
}

// Labels returns the distinct keys of this section's items in file order:
// the labels of a labelled block (federates_with "a.org" { ... } read
// with Block("federates_with") holds the key "a.org"), each then read with
// Block.
func (s *Section) Labels() []string {
	var out []string
	seen := make(map[string]bool)
	for _, it := range s.items {
		if len(it.Keys) == 0 {
			continue
		}
		k := keyText(it.Keys[0].Token)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// body returns the contents of block key and its line. JSON flattening
// turns {"key": {"a": {...}, "b": {...}}} into items keyed [key, a] and
// [key, b]; those pieces are joined back into one body.
func (s *Section) body(key, example string) (*ast.ObjectList, int) {
	s.known = append(s.known, key)
	var list *ast.ObjectList
	first, flattened := 0, false
	for _, it := range s.items {
		if len(it.Keys) == 0 || !strings.EqualFold(keyText(it.Keys[0].Token), key) {
			continue
		}
		if s.used == nil {
			s.used = make(map[*ast.ObjectItem]bool)
		}
		s.used[it] = true
		line := itemLine(it)
		if len(it.Keys) > 1 {
			if list == nil {
				list, first, flattened = &ast.ObjectList{}, line, true
			}
			if flattened {
				list.Add(&ast.ObjectItem{Keys: it.Keys[1:], Assign: it.Assign, Val: it.Val})
				continue
			}
		}
		ot, ok := it.Val.(*ast.ObjectType)
		switch {
		case len(it.Keys) > 1 || list != nil:
			s.d.Errorf(line, s.Key(key), "set more than once (first at line %d; keep one)", first)
		case !ok:
			s.d.Errorf(line, s.Key(key), "must be a block, not %s (write %s)", describe(it), example)
		default:
			list, first = ot.List, line
		}
	}
	return list, first
}

// Ignore accepts key, which SPIRE knows but this project does not implement,
// and records a warning when it is present so the operator knows it has no
// effect.
func (s *Section) Ignore(key string) {
	if it := s.take(key); it != nil {
		s.d.Warnf(itemLine(it), s.Key(key), "not implemented by spire-hw; ignored")
	}
}

// IgnoreBecause is Ignore with the reason given instead of "not
// implemented", for keys that spire-hw knows but that have no effect where
// they are written.
func (s *Section) IgnoreBecause(key, why string) {
	if it := s.take(key); it != nil {
		s.d.Warnf(itemLine(it), s.Key(key), "%s; ignored", why)
	}
}

// Finish records an "unknown key" error for every key no getter asked for,
// suggesting the closest known key. Call it after reading the section.
func (s *Section) Finish() {
	for _, it := range s.items {
		if s.used[it] {
			continue
		}
		name := "?"
		if len(it.Keys) > 0 {
			name = keyText(it.Keys[0].Token)
		}
		fix := "remove it; see the SPIRE configuration reference for the valid keys"
		if alt := suggest(name, s.known); alt != "" {
			fix = fmt.Sprintf("did you mean %q?", alt)
		}
		s.d.Errorf(itemLine(it), s.Key(name), "unknown key (%s)", fix)
	}
}

// keyText returns the name of an object key, which is an identifier or a
// quoted string. It never panics, unlike token.Value on malformed strings.
func keyText(t token.Token) string {
	if t.Type == token.STRING {
		if v, err := unquote(t); err == nil {
			return v
		}
	}
	return t.Text
}

// literalText converts a literal token to its text value without panicking.
func literalText(t token.Token) (string, error) {
	switch t.Type {
	case token.STRING:
		v, err := unquote(t)
		if err != nil {
			return "", fmt.Errorf("malformed string %s (check the quotes and escapes)", t.Text)
		}
		return v, nil
	case token.HEREDOC:
		return heredocText(t.Text)
	case token.NUMBER, token.FLOAT, token.BOOL, token.IDENT:
		return t.Text, nil
	}
	return "", fmt.Errorf("unsupported value %s", t.Text)
}

func unquote(t token.Token) (string, error) {
	if t.Text == "" {
		return "", nil // JSON null
	}
	if t.JSON {
		return strconv.Unquote(t.Text)
	}
	return hclstrconv.Unquote(t.Text)
}

// heredocText extracts the body of <<EOF ... EOF with the HCL library's own
// rules, turning its panic on a malformed heredoc into an error.
func heredocText(raw string) (text string, err error) {
	defer func() {
		if recover() != nil {
			text, err = "", errors.New("malformed heredoc (put the opening marker alone at the end of its line)")
		}
	}()
	v, _ := token.Token{Type: token.HEREDOC, Text: raw}.Value().(string)
	return v, nil
}

// itemLine is the line of an item's first key (or its value).
func itemLine(it *ast.ObjectItem) int {
	if len(it.Keys) > 0 {
		return it.Keys[0].Token.Pos.Line
	}
	if it.Val != nil {
		return it.Val.Pos().Line
	}
	return 0
}

// describe names what an item holds, for "must be X, not Y" messages.
func describe(it *ast.ObjectItem) string {
	if len(it.Keys) > 1 {
		return "a labelled block"
	}
	switch v := it.Val.(type) {
	case *ast.ObjectType:
		return "a block"
	case *ast.ListType:
		return "a list"
	case *ast.LiteralType:
		switch v.Token.Type {
		case token.BOOL:
			return "a boolean"
		case token.NUMBER, token.FLOAT:
			return "a number"
		}
		return "a string"
	}
	return "an unexpected value"
}
