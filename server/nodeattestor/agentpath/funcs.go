package agentpath

import (
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // sha1sum is a template function of SPIRE's, a naming helper, not a security check
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/adler32"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"unicode"
)

// funcs are the functions SPIRE v1.13.3 offers in agent_path_template
// (pkg/common/agentpathtemplate: a chosen subset of the sprig library),
// with sprig's names, argument order (the value last, for pipelines) and
// results. Not here, because sprig takes them from libraries this module
// does not depend on: snakecase, camelcase and kebabcase (huandu/xstrings),
// wrap and wrapWith (goutils); a template that uses one fails to parse,
// naming it, rather than rendering something else.
var funcs = template.FuncMap{
	// Strings.
	"abbrev":     abbrev,
	"abbrevboth": abbrevboth,
	"trunc":      trunc,
	"trim":       strings.TrimSpace,
	"upper":      strings.ToUpper,
	"lower":      strings.ToLower,
	"title":      title,
	"untitle":    untitle,
	"substr":     substr,
	"repeat":     func(n int, s string) string { return strings.Repeat(s, max(n, 0)) },
	"trimAll":    func(cut, s string) string { return strings.Trim(s, cut) },
	"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
	"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
	"nospace":    nospace,
	"initials":   initials,
	"swapcase":   swapcase,
	"contains":   func(sub, s string) bool { return strings.Contains(s, sub) },
	"hasPrefix":  func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
	"hasSuffix":  func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
	"quote":      quote,
	"squote":     squote,
	"cat":        cat,
	"indent":     indent,
	"nindent":    func(n int, s string) string { return "\n" + indent(n, s) },
	"replace":    func(old, repl, s string) string { return strings.ReplaceAll(s, old, repl) },
	"plural": func(one, many string, n int) string {
		if n == 1 {
			return one
		}
		return many
	},
	"toString":  strval,
	"toStrings": strslice,
	"seq":       seq,
	"splitList": func(sep, s string) []string { return strings.Split(s, sep) },
	"join":      func(sep string, v any) string { return strings.Join(strslice(v), sep) },
	"sortAlpha": sortAlpha,

	// Hashes and encodings.
	"sha1sum":    func(s string) string { h := sha1.Sum([]byte(s)); return hex.EncodeToString(h[:]) }, //nolint:gosec // see the import
	"sha256sum":  func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) },
	"adler32sum": func(s string) string { return strconv.FormatUint(uint64(adler32.Checksum([]byte(s))), 10) },
	"b64enc":     func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"b64dec":     func(s string) string { return decoded(base64.StdEncoding.DecodeString(s)) },
	"b32enc":     func(s string) string { return base32.StdEncoding.EncodeToString([]byte(s)) },
	"b32dec":     func(s string) string { return decoded(base32.StdEncoding.DecodeString(s)) },

	// Defaults and logic.
	"default":  dfault,
	"empty":    empty,
	"coalesce": coalesce,
	"all":      all,
	"any":      anyOf,
	"ternary": func(vt, vf any, v bool) any {
		if v {
			return vt
		}
		return vf
	},
	"fail": func(msg string) (string, error) { return "", errors.New(msg) },

	// Paths (slash-separated, as agent paths are).
	"base":  path.Base,
	"dir":   path.Dir,
	"clean": path.Clean,
	"ext":   path.Ext,
	"isAbs": path.IsAbs,

	// Regular expressions: the plain forms fail the template on a bad
	// expression, the must forms return the error; either way rendering
	// stops with it.
	"regexMatch":                 mustRegexMatch,
	"mustRegexMatch":             mustRegexMatch,
	"regexFindAll":               mustRegexFindAll,
	"mustRegexFindAll":           mustRegexFindAll,
	"regexFind":                  mustRegexFind,
	"mustRegexFind":              mustRegexFind,
	"regexReplaceAll":            mustRegexReplaceAll,
	"mustRegexReplaceAll":        mustRegexReplaceAll,
	"regexReplaceAllLiteral":     mustRegexReplaceAllLiteral,
	"mustRegexReplaceAllLiteral": mustRegexReplaceAllLiteral,
	"regexSplit":                 mustRegexSplit,
	"mustRegexSplit":             mustRegexSplit,
	"regexQuoteMeta":             regexp.QuoteMeta,

	// URLs and identifiers.
	"urlParse": urlParse,
	"urlJoin":  urlJoin,
	"uuidv4":   uuidv4,
}

func init() {
	for name, fn := range listFuncs {
		funcs[name] = fn
	}
}

func abbrev(width int, s string) string {
	if width < 4 {
		return s
	}
	return abbreviate(s, 0, width)
}

func abbrevboth(left, right int, s string) string {
	if right < 4 || left > 0 && right < 7 {
		return s
	}
	return abbreviate(s, left, right)
}

// abbreviate shortens s to width bytes with "...", keeping what is at
// offset in view (Apache Commons' StringUtils.abbreviate, as sprig has it).
func abbreviate(s string, offset, width int) string {
	const marker = "..."
	if s == "" || len(s) <= width {
		return s
	}
	offset = min(offset, len(s))
	if len(s)-offset < width-3 {
		offset = len(s) - (width - 3)
	}
	if offset <= 4 {
		return s[:width-3] + marker
	}
	if width < 7 {
		return ""
	}
	if offset+width-3 < len(s) {
		return marker + abbreviate(s[offset:], 0, width-3)
	}
	return marker + s[len(s)-(width-3):]
}

func trunc(n int, s string) string {
	switch {
	case n < 0 && len(s)+n > 0:
		return s[len(s)+n:]
	case n >= 0 && len(s) > n:
		return s[:n]
	}
	return s
}

func substr(start, end int, s string) string {
	if start < 0 {
		return s[:end]
	}
	if end < 0 || end > len(s) {
		return s[start:]
	}
	return s[start:end]
}

// title upper-cases the first letter of each word, as strings.Title,
// which sprig uses, does (a word starts after a non-letter).
func title(s string) string {
	prev := ' '
	return strings.Map(func(r rune) rune {
		if isSeparator(prev) {
			prev = r
			return unicode.ToTitle(r)
		}
		prev = r
		return r
	}, s)
}

// isSeparator is strings.Title's word boundary.
func isSeparator(r rune) bool {
	if r <= 0x7F {
		switch {
		case '0' <= r && r <= '9', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', r == '_':
			return false
		}
		return true
	}
	if unicode.IsLetter(r) || unicode.IsDigit(r) {
		return false
	}
	return unicode.IsSpace(r)
}

// untitle lower-cases the first letter of each space-separated word.
func untitle(s string) string {
	rs := []rune(s)
	next := true
	for i, r := range rs {
		switch {
		case unicode.IsSpace(r):
			next = true
		case next:
			rs[i] = unicode.ToLower(r)
			next = false
		}
	}
	return string(rs)
}

func nospace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// initials is the first byte of each whitespace-separated word.
func initials(s string) string {
	var b strings.Builder
	gap := true
	for i := 0; i < len(s); i++ {
		ch := rune(s[i])
		switch {
		case unicode.IsSpace(ch):
			gap = true
		case gap:
			b.WriteRune(ch)
			gap = false
		}
	}
	return b.String()
}

// swapcase swaps letter case; a lower-case letter after white space
// becomes title case.
func swapcase(s string) string {
	rs := []rune(s)
	space := true
	for i, r := range rs {
		switch {
		case unicode.IsUpper(r), unicode.IsTitle(r):
			rs[i] = unicode.ToLower(r)
			space = false
		case unicode.IsLower(r):
			if space {
				rs[i] = unicode.ToTitle(r)
			} else {
				rs[i] = unicode.ToUpper(r)
			}
			space = false
		default:
			space = unicode.IsSpace(r)
		}
	}
	return string(rs)
}

func quote(vs ...any) string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		if v != nil {
			out = append(out, strconv.Quote(strval(v)))
		}
	}
	return strings.Join(out, " ")
}

func squote(vs ...any) string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		if v != nil {
			out = append(out, fmt.Sprintf("'%v'", v))
		}
	}
	return strings.Join(out, " ")
}

func cat(vs ...any) string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		if v != nil {
			out = append(out, fmt.Sprintf("%v", v))
		}
	}
	return strings.Join(out, " ")
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", max(n, 0))
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// seq counts as the seq command does: seq END, seq START END, seq START
// STEP END, the numbers joined by spaces.
func seq(params ...int) string {
	var start, step, end int
	switch len(params) {
	case 1:
		start, end, step = 1, params[0], 1
		if end < start {
			step = -1
		}
	case 2:
		start, end, step = params[0], params[1], 1
		if end < start {
			step = -1
		}
	case 3:
		start, step, end = params[0], params[1], params[2]
		if end < start && step > 0 {
			return ""
		}
	default:
		return ""
	}
	if step == 0 {
		return ""
	}
	var out []string
	for i := start; (step > 0 && i <= end) || (step < 0 && i >= end); i += step {
		out = append(out, strconv.Itoa(i))
	}
	return strings.Join(out, " ")
}

// decoded is sprig's answer to a decoding: the text, or the error's text.
func decoded(b []byte, err error) string {
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func mustRegexMatch(re, s string) (bool, error) { return regexp.MatchString(re, s) }

func mustRegexFindAll(re, s string, n int) ([]string, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return nil, err
	}
	return r.FindAllString(s, n), nil
}

func mustRegexFind(re, s string) (string, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return "", err
	}
	return r.FindString(s), nil
}

func mustRegexReplaceAll(re, s, repl string) (string, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return "", err
	}
	return r.ReplaceAllString(s, repl), nil
}

func mustRegexReplaceAllLiteral(re, s, repl string) (string, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return "", err
	}
	return r.ReplaceAllLiteralString(s, repl), nil
}

func mustRegexSplit(re, s string, n int) ([]string, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return nil, err
	}
	return r.Split(s, n), nil
}

func urlParse(v string) (map[string]any, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("unable to parse url: %w", err)
	}
	user := ""
	if u.User != nil {
		user = u.User.String()
	}
	return map[string]any{
		"scheme": u.Scheme, "host": u.Host, "hostname": u.Hostname(), "path": u.Path,
		"query": u.RawQuery, "opaque": u.Opaque, "fragment": u.Fragment, "userinfo": user,
	}, nil
}

func urlJoin(d map[string]any) (string, error) {
	get := func(k string) string {
		if v, ok := d[k].(string); ok {
			return v
		}
		return ""
	}
	u := url.URL{Scheme: get("scheme"), Host: get("host"), Path: get("path"), RawQuery: get("query"), Opaque: get("opaque"), Fragment: get("fragment")}
	if ui := get("userinfo"); ui != "" {
		t, err := url.Parse("proto://" + ui + "@host")
		if err != nil {
			return "", fmt.Errorf("unable to parse userinfo in dict: %w", err)
		}
		u.User = t.User
	}
	return u.String(), nil
}

// uuidv4 is a random (version 4, RFC 9562) UUID in its usual text form.
func uuidv4() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
