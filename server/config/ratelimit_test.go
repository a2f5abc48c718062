package config

import (
	"strings"
	"testing"
)

func TestRateLimitAndAuditLog(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		want  RateLimit
		audit bool
	}{
		{name: "SPIRE's defaults: both limits on, no audit log", want: RateLimit{Attestation: true, Signing: true}},
		{name: "attestation off", body: "ratelimit {\n attestation = false\n}", want: RateLimit{Signing: true}},
		{name: "signing off", body: "ratelimit {\n signing = false\n}", want: RateLimit{Attestation: true}},
		{name: "both off, as strings", body: "ratelimit {\n attestation = \"false\"\n signing = \"false\"\n}"},
		{name: "empty block keeps defaults", body: "ratelimit {}", want: RateLimit{Attestation: true, Signing: true}},
		{name: "audit log", body: "audit_log_enabled = true", want: RateLimit{Attestation: true, Signing: true}, audit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("server.conf", []byte(withServer("trust_domain = \"example.org\"\ndata_dir = \"d\"\n"+tc.body)), false)
			if err != nil {
				t.Fatal(err)
			}
			if c.Server.RateLimit != tc.want {
				t.Errorf("ratelimit = %+v, want %+v", c.Server.RateLimit, tc.want)
			}
			if c.Server.AuditLogEnabled != tc.audit {
				t.Errorf("audit_log_enabled = %v, want %v", c.Server.AuditLogEnabled, tc.audit)
			}
			for _, w := range c.Warnings {
				if strings.Contains(w, "ratelimit") || strings.Contains(w, "audit_log_enabled") {
					t.Errorf("warning for an implemented key: %s", w)
				}
			}
		})
	}
}

func TestRateLimitErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"ratelimit {\n attestation = \"sometimes\"\n}", `server.ratelimit.attestation: invalid boolean "sometimes"`},
		{"ratelimit {\n attest = false\n}", "server.ratelimit.attest"},
		{"ratelimit = true", "server.ratelimit: must be a block"},
		{"audit_log_enabled = \"yes\"", `server.audit_log_enabled: invalid boolean "yes"`},
	} {
		_, err := Parse("server.conf", []byte(withServer("trust_domain = \"example.org\"\ndata_dir = \"d\"\n"+tc.body)), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}
