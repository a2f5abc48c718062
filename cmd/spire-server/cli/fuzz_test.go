package cli

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseEntryJSON feeds arbitrary -data files to the parser: it must not
// panic, and every entry it accepts carries valid SPIFFE and parent IDs.
func FuzzParseEntryJSON(f *testing.F) {
	f.Add([]byte(`{"entries":[{"selectors":[{"type":"unix","value":"uid:1111"}],"spiffe_id":"spiffe://example.org/Blog","parent_id":"spiffe://example.org/spire/agent/join_token/TokenBlog","x509_svid_ttl":200}]}`))
	f.Add([]byte(`{"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/a","federates_with":["spiffe://o.org","o2.org"],"dns_names":["x"],"entryExpiry":1,"admin":true,"downstream":true,"store_svid":true,"jwt_svid_ttl":5,"hint":"h","ttl":9}]}`))
	f.Add([]byte(`{"entries":[null]}`))
	f.Add([]byte(`{"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/a","selectors":[null]}]}`))
	f.Add([]byte(`{"ENTRIES":[{"SPIFFE_ID":"spiffe://td/w","Parent_Id":"spiffe://td/a"}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/a","x509_svid_ttl":99999999999}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseEntryJSON(data)
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatal("accepted data with no entries")
		}
		for _, e := range entries {
			if e.SpiffeId == nil || e.ParentId == nil || e.SpiffeId.TrustDomain == "" || e.ParentId.TrustDomain == "" {
				t.Fatalf("accepted entry without valid IDs: %v", e)
			}
			if _, err := idToProto(idString(e.SpiffeId)); err != nil {
				t.Fatalf("accepted SPIFFE ID that does not re-parse: %v", err)
			}
		}
	})
}

// FuzzParseSelector checks that a parsed selector always re-joins to its
// input and that only colon-less input is rejected.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"unix:uid:1000", "k8s:ns:default", "nocolon", ":", "a:", ":b", "spiffe_id:spiffe://td/x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if !strings.Contains(s, ":") {
			if err == nil {
				t.Fatalf("accepted %q without a colon", s)
			}
			return
		}
		if err != nil {
			t.Fatalf("rejected %q: %v", s, err)
		}
		if strings.Contains(sel.Type, ":") || sel.Type+":"+sel.Value != s {
			t.Fatalf("%q parsed as type %q value %q", s, sel.Type, sel.Value)
		}
	})
}

// FuzzJWTExpiry runs the unverified exp reader over arbitrary tokens from
// the server; it must not panic and must return a sane time or an error.
func FuzzJWTExpiry(f *testing.F) {
	f.Add(jwtWithPayload(`{"exp":1628500000}`))
	f.Add(jwtWithPayload(`{"exp":1.5e9}`))
	f.Add(jwtWithPayload(`{"exp":-1}`))
	f.Add(jwtWithPayload(`{}`))
	f.Add("a.b")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		exp, err := jwtExpiry(token)
		if err == nil && (exp.Before(time.Unix(0, 0)) || exp.After(time.Unix(1<<40, 0))) {
			t.Fatalf("out-of-range expiry %v", exp)
		}
	})
}
