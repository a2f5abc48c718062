package tpmdevid

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("cert.txt", "not a certificate")
	blob := write("blob", "\x00\x01\x00\x0b")
	empty := write("empty", "")
	pemCert := write("cert.pem", "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n")
	for _, tc := range []struct {
		name string
		d    PluginData
		want string
	}{
		{"NothingSet", PluginData{}, "devid_cert_path is required"},
		{"NoPriv", PluginData{DevIDCertPath: "c", DevIDPubPath: "p"}, "devid_priv_path is required"},
		{"NoPub", PluginData{DevIDCertPath: "c", DevIDPrivPath: "p"}, "devid_pub_path is required"},
		{"MissingCert", PluginData{DevIDCertPath: "/nonexistent", DevIDPrivPath: blob, DevIDPubPath: blob, TPMDevicePath: "tcp://x"}, "devid_cert_path"},
		{"CertNotPEM", PluginData{DevIDCertPath: notPEM, DevIDPrivPath: blob, DevIDPubPath: blob, TPMDevicePath: "tcp://x"}, "no PEM certificate"},
		{"EmptyBlob", PluginData{DevIDCertPath: pemCert, DevIDPrivPath: empty, DevIDPubPath: blob, TPMDevicePath: "tcp://x"}, "devid_priv_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestAutodetect: an empty tpm_device_path takes the one tpmrmN, then the
// one tpmN, and refuses to choose between two, as SPIRE's agent does.
func TestAutodetect(t *testing.T) {
	old := deviceDir
	t.Cleanup(func() { deviceDir = old })
	for _, tc := range []struct {
		name  string
		files []string
		want  string // device, or error text
		ok    bool
	}{
		{"ResourceManagerFirst", []string{"tpm0", "tpmrm0", "tty0"}, "tpmrm0", true},
		{"RawDevice", []string{"tpm0", "null"}, "tpm0", true},
		{"TwoDevices", []string{"tpmrm0", "tpmrm1"}, "more than one", false},
		{"None", []string{"null"}, "no TPM device", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deviceDir = t.TempDir()
			for _, f := range tc.files {
				if err := os.WriteFile(filepath.Join(deviceDir, f), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cert := filepath.Join(t.TempDir(), "c.pem")
			_ = os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"), 0o600)
			a, err := New(PluginData{DevIDCertPath: cert, DevIDPrivPath: cert, DevIDPubPath: cert})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if got := a.TPMPath(); got != filepath.Join(deviceDir, tc.want) {
					t.Fatalf("detected %s, want %s", got, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRespondRefuses(t *testing.T) {
	a := &Attestor{path: "tcp://127.0.0.1:1"}
	if _, err := a.Respond(context.Background(), []byte(`{"DevID":"AQ==","CredActivation":{"Credential":"AQ==","Secret":"AQ=="}}`)); err == nil ||
		!strings.Contains(err.Error(), "before attestation data") {
		t.Errorf("challenge before data: %v", err)
	}
	if _, err := a.Respond(context.Background(), []byte(`{"DevID":"AQ=="}`)); err == nil || !strings.Contains(err.Error(), "credential activation") {
		t.Errorf("challenge without credential: %v", err)
	}
}
