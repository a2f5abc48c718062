package dockerd

import (
	"strings"
	"testing"
)

// FuzzUnescapeMount: any mountinfo field unescapes without a panic, a field
// without escapes is unchanged, and unescaping never lengthens a field.
func FuzzUnescapeMount(f *testing.F) {
	for _, s := range []string{`/tmp/dk1/data`, `/a\040b`, `\134`, `\`, `\04`, `\999`, `x\0401\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := unescapeMount(s)
		if !strings.Contains(s, `\`) && got != s {
			t.Fatalf("unescapeMount(%q) = %q, want it unchanged", s, got)
		}
		if len(got) > len(s) {
			t.Fatalf("unescapeMount(%q) = %q is longer", s, got)
		}
	})
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/x\134y`: `/x\y`, `/t\011`: "/t\t", `/bad\9`: `/bad\9`, `/end\`: `/end\`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
