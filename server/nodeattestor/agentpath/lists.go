package agentpath

import (
	"fmt"
	"reflect"
	"sort"
)

// listFuncs are sprig's list, dict and default functions of SPIRE's set.
// sprig's plain list functions panic on a value that is not a list, which
// text/template turns into an execution error; here both forms return the
// error, so the outcome is the same: the template fails, naming the call.
var listFuncs = map[string]any{
	"tuple":              list,
	"list":               list,
	"dict":               dict,
	"get":                func(d map[string]any, k string) any { return getOr(d, k, "") },
	"set":                func(d map[string]any, k string, v any) map[string]any { d[k] = v; return d },
	"unset":              func(d map[string]any, k string) map[string]any { delete(d, k); return d },
	"hasKey":             func(d map[string]any, k string) bool { _, ok := d[k]; return ok },
	"pluck":              pluck,
	"keys":               keys,
	"pick":               pick,
	"omit":               omit,
	"merge":              merge(false),
	"mergeOverwrite":     merge(true),
	"mustMerge":          merge(false),
	"mustMergeOverwrite": merge(true),
	"values":             values,
	"dig":                dig,
	"append":             appendList,
	"push":               appendList,
	"mustAppend":         appendList,
	"mustPush":           appendList,
	"prepend":            prependList,
	"mustPrepend":        prependList,
	"first":              first,
	"mustFirst":          first,
	"rest":               rest,
	"mustRest":           rest,
	"last":               last,
	"mustLast":           last,
	"initial":            initial,
	"mustInitial":        initial,
	"reverse":            reverse,
	"mustReverse":        reverse,
	"uniq":               uniq,
	"mustUniq":           uniq,
	"without":            without,
	"mustWithout":        without,
	"has":                has,
	"mustHas":            has,
	"slice":              slice,
	"mustSlice":          slice,
	"concat":             concat,
	"chunk":              chunk,
	"mustChunk":          chunk,
	"compact":            compact,
	"mustCompact":        compact,
}

func list(vs ...any) []any { return vs }

func dict(vs ...any) map[string]any {
	d := make(map[string]any, (len(vs)+1)/2)
	for i := 0; i < len(vs); i += 2 {
		k := strval(vs[i])
		if i+1 >= len(vs) {
			d[k] = ""
			continue
		}
		d[k] = vs[i+1]
	}
	return d
}

func getOr(d map[string]any, k string, def any) any {
	if v, ok := d[k]; ok {
		return v
	}
	return def
}

func pluck(k string, ds ...map[string]any) []any {
	var out []any
	for _, d := range ds {
		if v, ok := d[k]; ok {
			out = append(out, v)
		}
	}
	return out
}

// keys lists the dicts' keys; sprig leaves them in map order, which is
// random, so here they are sorted, one of the orders sprig may give.
func keys(ds ...map[string]any) []string {
	var out []string
	for _, d := range ds {
		for k := range d {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func pick(d map[string]any, ks ...string) map[string]any {
	out := map[string]any{}
	for _, k := range ks {
		if v, ok := d[k]; ok {
			out[k] = v
		}
	}
	return out
}

func omit(d map[string]any, ks ...string) map[string]any {
	drop := map[string]bool{}
	for _, k := range ks {
		drop[k] = true
	}
	out := map[string]any{}
	for k, v := range d {
		if !drop[k] {
			out[k] = v
		}
	}
	return out
}

// merge copies the keys of srcs into dst: missing ones only, or every one
// with overwrite (sprig merges nested dicts too; one level is done here,
// which is as deep as agent path data goes).
func merge(overwrite bool) func(dst map[string]any, srcs ...map[string]any) map[string]any {
	return func(dst map[string]any, srcs ...map[string]any) map[string]any {
		for _, src := range srcs {
			for k, v := range src {
				if _, ok := dst[k]; !ok || overwrite {
					dst[k] = v
				}
			}
		}
		return dst
	}
}

func values(d map[string]any) []any {
	out := make([]any, 0, len(d))
	for _, k := range keys(d) {
		out = append(out, d[k])
	}
	return out
}

// dig walks nested dicts: dig "a" "b" default dict.
func dig(ps ...any) (any, error) {
	if len(ps) < 3 {
		return nil, fmt.Errorf("dig needs at least three arguments")
	}
	d, ok := ps[len(ps)-1].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("dig: last argument is %T, not a dict", ps[len(ps)-1])
	}
	def := ps[len(ps)-2]
	for i, p := range ps[:len(ps)-2] {
		k, ok := p.(string)
		if !ok {
			return nil, fmt.Errorf("dig: key %v is not a string", p)
		}
		v, ok := d[k]
		if !ok {
			return def, nil
		}
		if i == len(ps)-3 {
			return v, nil
		}
		if d, ok = v.(map[string]any); !ok {
			return nil, fmt.Errorf("dig: %q is %T, not a dict", k, v)
		}
	}
	return def, nil
}

// items returns the elements of a slice or array.
func items(fn string, v any) ([]any, error) {
	rv := reflect.ValueOf(v)
	if k := rv.Kind(); k != reflect.Slice && k != reflect.Array {
		return nil, fmt.Errorf("cannot %s on type %s", fn, describe(v))
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, nil
}

func describe(v any) string {
	if v == nil {
		return "nil"
	}
	return reflect.TypeOf(v).Kind().String()
}

func appendList(l any, v any) ([]any, error) {
	xs, err := items("append", l)
	return append(xs, v), err
}

func prependList(l any, v any) ([]any, error) {
	xs, err := items("prepend", l)
	return append([]any{v}, xs...), err
}

func first(l any) (any, error) {
	xs, err := items("find first", l)
	if err != nil || len(xs) == 0 {
		return nil, err
	}
	return xs[0], nil
}

func last(l any) (any, error) {
	xs, err := items("find last", l)
	if err != nil || len(xs) == 0 {
		return nil, err
	}
	return xs[len(xs)-1], nil
}

func rest(l any) ([]any, error) {
	xs, err := items("find rest", l)
	if err != nil || len(xs) == 0 {
		return nil, err
	}
	return xs[1:], nil
}

func initial(l any) ([]any, error) {
	xs, err := items("find initial", l)
	if err != nil || len(xs) == 0 {
		return nil, err
	}
	return xs[:len(xs)-1], nil
}

func reverse(l any) ([]any, error) {
	xs, err := items("reverse", l)
	for i, j := 0, len(xs)-1; i < j; i, j = i+1, j-1 {
		xs[i], xs[j] = xs[j], xs[i]
	}
	return xs, err
}

func uniq(l any) ([]any, error) {
	xs, err := items("uniq", l)
	var out []any
	for _, x := range xs {
		if !inList(out, x) {
			out = append(out, x)
		}
	}
	return out, err
}

func without(l any, omit ...any) ([]any, error) {
	xs, err := items("find without", l)
	var out []any
	for _, x := range xs {
		if !inList(omit, x) {
			out = append(out, x)
		}
	}
	return out, err
}

func has(needle any, l any) (bool, error) {
	if l == nil {
		return false, nil
	}
	xs, err := items("find has", l)
	return inList(xs, needle), err
}

func inList(xs []any, v any) bool {
	for _, x := range xs {
		if reflect.DeepEqual(x, v) {
			return true
		}
	}
	return false
}

func slice(l any, idx ...int) (any, error) {
	rv := reflect.ValueOf(l)
	if k := rv.Kind(); k != reflect.Slice && k != reflect.Array {
		return nil, fmt.Errorf("list should be type of slice or array but %s", describe(l))
	}
	if rv.Len() == 0 {
		return nil, nil
	}
	start, end := 0, rv.Len()
	if len(idx) > 0 {
		start = idx[0]
	}
	if len(idx) > 1 {
		end = idx[1]
	}
	if start < 0 || end > rv.Len() || start > end {
		return nil, fmt.Errorf("slice bounds [%d:%d] out of range for length %d", start, end, rv.Len())
	}
	return rv.Slice(start, end).Interface(), nil
}

func concat(ls ...any) ([]any, error) {
	var out []any
	for _, l := range ls {
		xs, err := items("concat", l)
		if err != nil {
			return nil, err
		}
		out = append(out, xs...)
	}
	return out, nil
}

func chunk(size int, l any) ([][]any, error) {
	xs, err := items("chunk", l)
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("chunk size must be positive, got %d", size)
	}
	var out [][]any
	for i := 0; i < len(xs); i += size {
		out = append(out, xs[i:min(i+size, len(xs))])
	}
	return out, nil
}

func compact(l any) ([]any, error) {
	xs, err := items("compact", l)
	var out []any
	for _, x := range xs {
		if !empty(x) {
			out = append(out, x)
		}
	}
	return out, err
}

func sortAlpha(l any) []string {
	out := strslice(l)
	sort.Strings(out)
	return out
}

// empty is sprig's (text/template's) notion of an empty value.
func empty(v any) bool {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return true
	}
	switch rv.Kind() {
	case reflect.Array, reflect.Slice, reflect.Map, reflect.String:
		return rv.Len() == 0
	case reflect.Bool:
		return !rv.Bool()
	case reflect.Complex64, reflect.Complex128:
		return rv.Complex() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return rv.Float() == 0
	case reflect.Struct:
		return false
	default: // channels, functions, interfaces, pointers
		return rv.IsNil()
	}
}

// dfault is sprig's default: d unless the given value is set (not empty).
func dfault(d any, given ...any) any {
	if len(given) == 0 || empty(given[0]) {
		return d
	}
	return given[0]
}

func coalesce(vs ...any) any {
	for _, v := range vs {
		if !empty(v) {
			return v
		}
	}
	return nil
}

func all(vs ...any) bool {
	for _, v := range vs {
		if empty(v) {
			return false
		}
	}
	return true
}

func anyOf(vs ...any) bool {
	for _, v := range vs {
		if !empty(v) {
			return true
		}
	}
	return false
}

func strval(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	}
	return fmt.Sprintf("%v", v)
}

// strslice is sprig's toStrings: a list's non-nil elements as strings, or
// a single value as a one-element list.
func strslice(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	case nil:
		return []string{}
	}
	rv := reflect.ValueOf(v)
	if k := rv.Kind(); k != reflect.Slice && k != reflect.Array {
		return []string{strval(v)}
	}
	out := make([]string, 0, rv.Len())
	for i := 0; i < rv.Len(); i++ {
		if x := rv.Index(i).Interface(); x != nil {
			out = append(out, strval(x))
		}
	}
	return out
}
