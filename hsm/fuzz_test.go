package hsm_test

import (
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/hsm"
)

func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=ca;object=x509-CA-A?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234")
	f.Add("pkcs11:serial=abc;slot-id=3?pin-source=env:X")
	f.Add("pkcs11:token=a%20b?module-path=%2Fx")
	f.Add("pkcs11:")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hsm.ParseURI(s)
		if err != nil && strings.Contains(s, "pin-value=secretpin") && strings.Contains(err.Error(), "secretpin") {
			t.Fatalf("error shows the PIN: %v", err)
		}
		_ = u
	})
}

func TestParseURI(t *testing.T) {
	t.Setenv("URI_TEST_PIN", "4321")
	tests := []struct {
		name, uri          string
		token, obj, module string
		pin                string
		wantErr            string
	}{
		{"issue example", "pkcs11:token=ca;object=x509-CA-A?module-path=/m.so&pin-source=env:URI_TEST_PIN", "ca", "x509-CA-A", "/m.so", "4321", ""},
		{"percent-encoded", "pkcs11:token=my%20ca?module-path=/m.so&pin-value=1%32", "my ca", "", "/m.so", "12", ""},
		{"wrong scheme", "pkcs12:token=ca", "", "", "", "", `start with "pkcs11:"`},
		{"unknown attribute", "pkcs11:tokn=ca", "", "", "", "", "tokn"},
		{"duplicate", "pkcs11:token=a;token=b", "", "", "", "", "twice"},
		{"bad slot", "pkcs11:slot-id=x", "", "", "", "", "slot-id"},
		{"two PIN sources", "pkcs11:token=a?pin-value=1&pin-source=env:URI_TEST_PIN", "", "", "", "", "not both"},
		{"missing pin file", "pkcs11:token=a?pin-source=file:/nonexistent/pin", "", "", "", "", "pin_file"},
		{"malformed PIN attribute", "pkcs11:token=a?pin-valuesecretpin", "", "", "", "", "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := hsm.ParseURI(tt.uri)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secretpin") {
					t.Fatal("error shows the PIN")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Config.TokenLabel != tt.token || u.Object != tt.obj || u.Config.ModulePath != tt.module || string(u.Config.PIN) != tt.pin {
				t.Fatalf("got token %q object %q module %q", u.Config.TokenLabel, u.Object, u.Config.ModulePath)
			}
		})
	}
}
