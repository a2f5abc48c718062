package cli

import (
	"flag"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// stringsFlag is a repeatable string flag (-selector a:b -selector c:d).
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }

func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// triBool is a filter that can be unset, false or true. Like SPIRE it takes
// an explicit value ("-banned true"); any value other than true/false means
// "no filter".
type triBool int

const (
	triAll triBool = iota
	triFalse
	triTrue
)

func (b *triBool) String() string {
	switch *b {
	case triFalse:
		return "false"
	case triTrue:
		return "true"
	}
	return ""
}

func (b *triBool) Set(v string) error {
	switch strings.ToLower(v) {
	case "true":
		*b = triTrue
	case "false":
		*b = triFalse
	default:
		*b = triAll
	}
	return nil
}

// outputFormat selects between SPIRE's bespoke human output and protojson.
type outputFormat int

const (
	outputPretty outputFormat = iota
	outputJSON
)

func (o *outputFormat) String() string {
	if *o == outputJSON {
		return "json"
	}
	return "pretty"
}

func (o *outputFormat) Set(v string) error {
	switch strings.ToLower(v) {
	case "pretty":
		*o = outputPretty
	case "json":
		*o = outputJSON
	default:
		return fmt.Errorf("bad formatter flag: unknown format %q; use pretty or json", v)
	}
	return nil
}

func addOutputFlag(fs *flag.FlagSet, o *outputFormat) {
	fs.Var(o, "output", "Desired output format (pretty, json); default: pretty.")
}

// ParseSelector parses a CLI selector "type:value". Everything right of the
// first colon is the value, so "unix:uid:1000" is type "unix", value
// "uid:1000".
func ParseSelector(s string) (*types.Selector, error) {
	typ, value, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("selector %q must be formatted as type:value", s)
	}
	return &types.Selector{Type: typ, Value: value}, nil
}

func parseSelectors(in []string) ([]*types.Selector, error) {
	out := make([]*types.Selector, 0, len(in))
	for _, s := range in {
		sel, err := ParseSelector(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return out, nil
}

func parseSelectorMatch(match string) (types.SelectorMatch_MatchBehavior, error) {
	switch match {
	case "exact":
		return types.SelectorMatch_MATCH_EXACT, nil
	case "any":
		return types.SelectorMatch_MATCH_ANY, nil
	case "superset":
		return types.SelectorMatch_MATCH_SUPERSET, nil
	case "subset":
		return types.SelectorMatch_MATCH_SUBSET, nil
	}
	return types.SelectorMatch_MATCH_SUPERSET, fmt.Errorf("match behavior %q unknown; use exact, any, superset or subset", match)
}

func parseFederatesWithMatch(match string) (types.FederatesWithMatch_MatchBehavior, error) {
	switch match {
	case "exact":
		return types.FederatesWithMatch_MATCH_EXACT, nil
	case "any":
		return types.FederatesWithMatch_MATCH_ANY, nil
	case "superset":
		return types.FederatesWithMatch_MATCH_SUPERSET, nil
	case "subset":
		return types.FederatesWithMatch_MATCH_SUBSET, nil
	}
	return types.FederatesWithMatch_MATCH_SUPERSET, fmt.Errorf("match behavior %q unknown; use exact, any, superset or subset", match)
}

// idToProto parses a SPIFFE ID string into the API type.
func idToProto(s string) (*types.SPIFFEID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return nil, err
	}
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}, nil
}

// idString renders an API SPIFFE ID; nil renders empty, as in SPIRE.
func idString(id *types.SPIFFEID) string {
	if id == nil {
		return ""
	}
	return "spiffe://" + id.TrustDomain + id.Path
}

// pluralize returns singular when n is one and plural otherwise.
func pluralize(n int, singular, plural string) string {
	if n == 1 {
		return singular
	}
	return plural
}
