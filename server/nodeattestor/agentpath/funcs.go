package agentpath

import (
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig/v3"
)

// spireFuncs names the sprig functions SPIRE v1.13.3 enables in
// agent_path_template (pkg/common/agentpathtemplate). Nothing that reads
// the environment, the clock or randomness beyond uuidv4 is in it, so a
// template names a node the same way on every server.
var spireFuncs = strings.Fields(`abbrev abbrevboth trunc trim upper lower title untitle substr repeat
	trimAll trimSuffix trimPrefix nospace initials swapcase snakecase camelcase kebabcase wrap wrapWith
	contains hasPrefix hasSuffix quote squote cat indent nindent replace plural sha1sum sha256sum
	adler32sum toString seq splitList toStrings join sortAlpha default empty coalesce all any compact
	mustCompact ternary base dir clean ext isAbs b64enc b64dec b32enc b32dec tuple list dict get set
	unset hasKey pluck keys pick omit merge mergeOverwrite mustMerge mustMergeOverwrite values append
	push mustAppend mustPush prepend mustPrepend first mustFirst rest mustRest last mustLast initial
	mustInitial reverse mustReverse uniq mustUniq without mustWithout has mustHas slice mustSlice concat
	dig chunk mustChunk uuidv4 fail regexMatch mustRegexMatch regexFindAll mustRegexFindAll regexFind
	mustRegexFind regexReplaceAll mustRegexReplaceAll regexReplaceAllLiteral mustRegexReplaceAllLiteral
	regexSplit mustRegexSplit regexQuoteMeta urlParse urlJoin`)

// funcs are those functions, taken from sprig itself (as SPIRE does) so
// that every one behaves exactly as in SPIRE's templates.
var funcs = func() template.FuncMap {
	all := sprig.TxtFuncMap()
	m := make(template.FuncMap, len(spireFuncs))
	for _, name := range spireFuncs {
		fn, ok := all[name]
		if !ok {
			panic("agentpath: sprig has no function " + name)
		}
		m[name] = fn
	}
	return m
}()
