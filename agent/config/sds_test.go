package config

import (
	"strings"
	"testing"
)

func TestSDS(t *testing.T) {
	bundle := "    trust_bundle_path = \"b.pem\"\n"
	for _, tc := range []struct {
		name, block string
		want        SDS
		warn        string
	}{
		{"absent: SPIRE's defaults", "", SDS{DefaultSVIDName: "default", DefaultBundleName: "ROOTCA", DefaultAllBundlesName: "ALL"}, ""},
		{"every key", `sds {
        default_svid_name = "svid"
        default_bundle_name = "bundle"
        default_all_bundles_name = "everything"
        disable_spiffe_cert_validation = true
    }`, SDS{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DefaultAllBundlesName: "everything", DisableSPIFFECertValidation: true}, ""},
		{"empty names keep the defaults", `sds {
        default_svid_name = ""
        default_bundle_name = ""
    }`, SDS{DefaultSVIDName: "default", DefaultBundleName: "ROOTCA", DefaultAllBundlesName: "ALL"}, ""},
		{"same bundle and all-bundles name", `sds {
        default_bundle_name = "ALL"
    }`, SDS{DefaultSVIDName: "default", DefaultBundleName: "ALL", DefaultAllBundlesName: "ALL"},
			`agent.sds.default_all_bundles_name: the "default_bundle_name" and "default_all_bundles_name" configurables have the same value ("ALL"). "default_all_bundles_name" will be ignored.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("agent.conf", []byte(withAgent(base+bundle+"    "+tc.block)), false)
			if err != nil {
				t.Fatal(err)
			}
			if c.Agent.SDS != tc.want {
				t.Errorf("got %+v, want %+v", c.Agent.SDS, tc.want)
			}
			all := strings.Join(c.Warnings, "\n")
			if tc.warn == "" && all != "" {
				t.Errorf("warnings: %s", all)
			}
			if !strings.Contains(all, tc.warn) {
				t.Errorf("warnings %q, want one containing %q", all, tc.warn)
			}
		})
	}

	for _, tc := range []struct{ name, body, want string }{
		{"unknown key", `default_svid_nam = "x"`, `agent.sds.default_svid_nam: unknown key (did you mean "default_svid_name"?)`},
		{"not a bool", `disable_spiffe_cert_validation = "maybe"`, `agent.sds.disable_spiffe_cert_validation`},
		{"not a string", `default_bundle_name = ["a"]`, `agent.sds.default_bundle_name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("agent.conf", []byte(withAgent(base+bundle+"    sds {\n      "+tc.body+"\n    }")), false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
