package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func load(t *testing.T, hcl string) (*svidstorev1.SVIDStorePluginClient, error) {
	t.Helper()
	s := new(svidstorev1.SVIDStorePluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   svidstorev1.SVIDStorePluginServer(p),
		PluginClient:   s,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return s, err
}

func put(t *testing.T, s *svidstorev1.SVIDStorePluginClient, id string, metadata ...string) {
	t.Helper()
	if _, err := s.PutX509SVID(context.Background(), &svidstorev1.PutX509SVIDRequest{
		Svid: &svidstorev1.X509SVID{
			SpiffeID:   id,
			CertChain:  [][]byte{[]byte("leaf " + id), []byte("intermediate")},
			PrivateKey: []byte("SECRET-KEY-BYTES"),
			ExpiresAt:  1700000000,
		},
		Metadata: metadata,
	}); err != nil {
		t.Fatalf("PutX509SVID(%s): %v", id, err)
	}
}

func TestPutAndDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := load(t, `dir = "`+dir+`"`)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	put(t, s, "spiffe://example.org/web", "name:web", "region:eu")
	put(t, s, "spiffe://example.org/db", "name:db")
	put(t, s, "spiffe://example.org/web", "region:eu", "name:web") // replaces, in place

	path := filepath.Join(dir, "spiffe___example.org_web.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "SECRET") || strings.Contains(string(data), "private") {
		t.Fatalf("record holds the private key: %s", data)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	leaf, inter := sha256.Sum256([]byte("leaf spiffe://example.org/web")), sha256.Sum256([]byte("intermediate"))
	want := Record{SPIFFEID: "spiffe://example.org/web", Metadata: []string{"region:eu", "name:web"},
		CertChainSHA256: []string{hex.EncodeToString(leaf[:]), hex.EncodeToString(inter[:])}, ExpiresAt: 1700000000}
	if !reflect.DeepEqual(rec, want) {
		t.Fatalf("record %+v, want %+v", rec, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("%d files in the store, want 2 (no temp files left)", len(entries))
	}

	// The same metadata in another order finds the record.
	if _, err := s.DeleteX509SVID(context.Background(), &svidstorev1.DeleteX509SVIDRequest{Metadata: []string{"name:web", "region:eu"}}); err != nil {
		t.Fatalf("DeleteX509SVID: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("record still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "spiffe___example.org_db.json")); err != nil {
		t.Fatalf("other record gone: %v", err)
	}
	// Deleting what is not there is not an error.
	if _, err := s.DeleteX509SVID(context.Background(), &svidstorev1.DeleteX509SVIDRequest{Metadata: []string{"name:web"}}); err != nil {
		t.Fatalf("DeleteX509SVID of nothing: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	s, err := load(t, `dir = "`+t.TempDir()+`"`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{name: "put without SVID", call: func() error {
			_, err := s.PutX509SVID(context.Background(), &svidstorev1.PutX509SVIDRequest{})
			return err
		}},
		{name: "put with a bad ID", call: func() error {
			_, err := s.PutX509SVID(context.Background(), &svidstorev1.PutX509SVIDRequest{Svid: &svidstorev1.X509SVID{SpiffeID: "../../etc/passwd", CertChain: [][]byte{{1}}}})
			return err
		}},
		{name: "put without chain", call: func() error {
			_, err := s.PutX509SVID(context.Background(), &svidstorev1.PutX509SVIDRequest{Svid: &svidstorev1.X509SVID{SpiffeID: "spiffe://example.org/x"}})
			return err
		}},
		{name: "delete without metadata", call: func() error {
			_, err := s.DeleteX509SVID(context.Background(), &svidstorev1.DeleteX509SVIDRequest{})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v, want InvalidArgument", err)
			}
		})
	}
}

func TestConfigureRefusals(t *testing.T) {
	for _, hcl := range []string{``, `dir = "/nonexistent/dir"`, "dir = \"" + t.TempDir() + "\"\nfail_configure = true"} {
		if _, err := load(t, hcl); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Configure(%q) = %v, want InvalidArgument", hcl, err)
		}
	}
}

func TestFileName(t *testing.T) {
	for id, want := range map[string]string{
		"spiffe://example.org/a/b": "spiffe___example.org_a_b.json",
		"spiffe://td/x-y.z":        "spiffe___td_x-y.z.json",
	} {
		if got := FileName(id); got != want {
			t.Errorf("FileName(%q) = %q, want %q", id, got, want)
		}
	}
}
