package config

import (
	"strings"
	"testing"
)

func TestAuthorizedDelegates(t *testing.T) {
	const common = base + "    trust_bundle_path = \"b.pem\"\n"
	const admin = "    admin_socket_path = \"/run/spire/admin/admin.sock\"\n"
	for _, tc := range []struct {
		name, body string
		want       []string
		err, warn  string
	}{
		{"absent", admin, nil, "", ""},
		{"two IDs", admin + `    authorized_delegates = ["spiffe://example.org/cilium", "spiffe://example.org/ztunnel"]`,
			[]string{"spiffe://example.org/cilium", "spiffe://example.org/ztunnel"}, "", ""},
		{"another trust domain", admin + `    authorized_delegates = ["spiffe://other.org/cilium"]`, nil,
			`error validating authorized delegate: SPIFFE ID "spiffe://other.org/cilium" is not a member of trust domain "example.org"`, ""},
		{"not a SPIFFE ID", admin + `    authorized_delegates = ["cilium"]`, nil, `error validating authorized delegate: "cilium"`, ""},
		{"without the admin socket", `    authorized_delegates = ["spiffe://example.org/cilium"]`, []string{"spiffe://example.org/cilium"}, "",
			"agent.authorized_delegates: set without admin_socket_path"},
		{"not a list", admin + `    authorized_delegates = 3`, nil, "authorized_delegates", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("agent.conf", []byte(withAgent(common+tc.body)), false)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, id := range c.Agent.AuthorizedDelegates {
				got = append(got, id.String())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("delegates %v, want %v", got, tc.want)
			}
			warns := strings.Join(c.Warnings, "\n")
			if tc.warn == "" && strings.Contains(warns, "authorized_delegates") || tc.warn != "" && !strings.Contains(warns, tc.warn) {
				t.Errorf("warnings %q, want %q", warns, tc.warn)
			}
		})
	}
}
