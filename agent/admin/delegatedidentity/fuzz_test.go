package delegatedidentity

import (
	"strings"
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// FuzzParseTarget feeds request targets (a PID and selectors, network
// input) to the validation every SubscribeToX509SVIDs and FetchJWTSVIDs
// goes through: it must never panic, must accept exactly one of a PID or
// selectors, and what it accepts must be within bounds and SPIRE's rules.
func FuzzParseTarget(f *testing.F) {
	f.Add(int32(0), "k8s\x00ns:demo", 1)
	f.Add(int32(447), "sa\x00foo", 1)
	f.Add(int32(-1), "", 0)
	f.Add(int32(0), "", 0)
	f.Add(int32(0), "sa:bar\x00boo", 1)
	f.Add(int32(0), "\x00foo", 3)
	f.Add(int32(0), "unix\x00uid:0\x00unix\x00gid:0", 300)
	f.Fuzz(func(t *testing.T, pid int32, raw string, repeat int) {
		// raw is type, value, type, value... separated by NUL; repeat
		// multiplies them (bounded, for time).
		parts := strings.Split(raw, "\x00")
		var sels []*types.Selector
		if raw != "" {
			for range min(max(repeat, 0), 2*MaxSelectors) {
				for i := 0; i < len(parts); i += 2 {
					s := &types.Selector{Type: parts[i]}
					if i+1 < len(parts) {
						s.Value = parts[i+1]
					}
					sels = append(sels, s)
				}
			}
		}
		got, err := parseTarget(pid, sels)
		if err != nil {
			if got.pid != 0 || got.selectors != nil {
				t.Fatalf("error %v with a target %+v", err, got)
			}
			return
		}
		switch {
		case got.pid != 0 && got.selectors != nil, got.pid == 0 && len(got.selectors) == 0:
			t.Fatalf("accepted target %+v is not exactly one of PID or selectors", got)
		case got.pid < 0:
			t.Fatalf("accepted negative pid %d", got.pid)
		case len(got.selectors) > MaxSelectors:
			t.Fatalf("accepted %d selectors", len(got.selectors))
		}
		for i, s := range got.selectors {
			if s.Type == "" || s.Value == "" || strings.Contains(s.Type, ":") || len(s.Type)+len(s.Value) > MaxSelectorLen {
				t.Fatalf("accepted bad selector %q:%q", s.Type, s.Value)
			}
			if s == sels[i] {
				t.Fatal("the request's selector is kept, not copied")
			}
		}
	})
}

// FuzzCheckAudiences checks FetchJWTSVIDs' audience rules on arbitrary
// lists: no panic, and nothing empty, too long or too many accepted.
func FuzzCheckAudiences(f *testing.F) {
	f.Add("aud", 1)
	f.Add("", 0)
	f.Add("", 1)
	f.Add("a\x00b\x00", 40)
	f.Add(strings.Repeat("x", MaxAudienceLen+1), 1)
	f.Fuzz(func(t *testing.T, raw string, repeat int) {
		var aud []string
		for range min(max(repeat, 0), 4*MaxAudiences) {
			aud = append(aud, strings.Split(raw, "\x00")...)
		}
		if err := checkAudiences(aud); err != nil {
			return
		}
		if len(aud) == 0 || len(aud) > MaxAudiences {
			t.Fatalf("accepted %d audiences", len(aud))
		}
		for _, a := range aud {
			if a == "" || len(a) > MaxAudienceLen {
				t.Fatalf("accepted audience of %d bytes", len(a))
			}
		}
	})
}
