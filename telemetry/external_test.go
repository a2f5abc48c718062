package telemetry

import (
	"math"
	"strings"
	"testing"
)

// TestCheckExternal: each way a plugin's metric would break a sink is a
// named row with the error it gets; SPIRE-style keys and labels pass.
func TestCheckExternal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    []string
		val    float64
		labels []Label
		err    string // substring; "" passes
	}{
		{"plugin key with labels", []string{"my_plugin", "calls"}, 1, []Label{{Name: "method", Value: "mint"}, {Name: "svid-type", Value: "x509"}}, ""},
		{"separators the sinks rewrite", []string{"a.b", "c-d", "e/f", "g h", "i=j", "k:l"}, 1, nil, ""},
		{"empty key", nil, 1, nil, "empty key"},
		{"empty part", []string{"a", ""}, 1, nil, "empty key part"},
		{"unnamable character", []string{"bad!name"}, 1, nil, `character '!'`},
		{"non-ASCII", []string{"naïve"}, 1, nil, "is not in a metric name"},
		{"too many parts", strings.Split(strings.Repeat("a.", 17), "."), 1, nil, "parts"},
		{"too long", []string{strings.Repeat("a", 300)}, 1, nil, "bytes"},
		{"NaN", []string{"a"}, math.NaN(), nil, "finite"},
		{"Inf", []string{"a"}, math.Inf(-1), nil, "finite"},
		{"quantile", []string{"a"}, 1, []Label{{Name: "quantile", Value: "0.5"}}, "reserved"},
		{"host", []string{"a"}, 1, []Label{{Name: "host", Value: "h"}}, "reserved"},
		{"trust_domain", []string{"a"}, 1, []Label{{Name: "trust-domain", Value: "x"}}, "reserved"},
		{"digit first", []string{"a"}, 1, []Label{{Name: "1st", Value: "x"}}, "not a valid"},
		{"double underscore", []string{"a"}, 1, []Label{{Name: "__name__", Value: "x"}}, "not a valid"},
		{"empty label name", []string{"a"}, 1, []Label{{Name: "", Value: "x"}}, "label name"},
		{"same after sanitizing", []string{"a"}, 1, []Label{{Name: "a-b", Value: "1"}, {Name: "a.b", Value: "2"}}, "twice"},
		{"long value", []string{"a"}, 1, []Label{{Name: "v", Value: strings.Repeat("x", 300)}}, "value of"},
		{"too many labels", []string{"a"}, 1, manyLabels(17), "labels, at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckExternal(tc.key, tc.val, tc.labels)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one with %q", err, tc.err)
			}
		})
	}
}

func manyLabels(n int) []Label {
	out := make([]Label, n)
	for i := range out {
		out[i] = Label{Name: "l" + strings.Repeat("x", i), Value: "v"}
	}
	return out
}
