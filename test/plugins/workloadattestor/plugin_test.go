package main

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// load serves a new plugin over go-plugin's gRPC and returns its clients.
func load(t *testing.T) (*workloadattestorv1.WorkloadAttestorPluginClient, *configv1.ConfigServiceClient) {
	t.Helper()
	wa := new(workloadattestorv1.WorkloadAttestorPluginClient)
	cfg := new(configv1.ConfigServiceClient)
	p := New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   workloadattestorv1.WorkloadAttestorPluginServer(p),
		PluginClient:   wa,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(p)},
		ServiceClients: []pluginsdk.ServiceClient{cfg},
	})
	return wa, cfg
}

func configure(t *testing.T, cfg *configv1.ConfigServiceClient, hcl string) error {
	t.Helper()
	_, err := cfg.Configure(context.Background(), &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
		HclConfiguration:  hcl,
	})
	return err
}

func TestAttest(t *testing.T) {
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	tests := []struct {
		name  string
		hcl   string
		label string
	}{
		{name: "default label", hcl: "", label: "ext"},
		{name: "configured label", hcl: `label = "blue"`, label: "blue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wa, cfg := load(t)
			if err := configure(t, cfg, tt.hcl); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			resp, err := wa.Attest(context.Background(), &workloadattestorv1.AttestRequest{Pid: int32(os.Getpid())})
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			want := []string{"uid:" + uid, "gid:" + gid, "label:" + tt.label, "trust_domain:example.org"}
			if !slices.Equal(resp.SelectorValues, want) {
				t.Fatalf("selectors = %q, want %q", resp.SelectorValues, want)
			}
		})
	}
}

func TestAttestRefusals(t *testing.T) {
	// A pid that certainly has no process: one of a child we started and
	// reaped, which the kernel will not reuse this soon.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run true: %v", err)
	}
	gone := int32(cmd.ProcessState.Pid())

	wa, cfg := load(t)
	if _, err := wa.Attest(context.Background(), &workloadattestorv1.AttestRequest{Pid: int32(os.Getpid())}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Attest before Configure: %v, want FailedPrecondition", err)
	}
	if err := configure(t, cfg, ""); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	tests := []struct {
		name string
		pid  int32
		want codes.Code
	}{
		{name: "vanished pid", pid: gone, want: codes.NotFound},
		{name: "zero pid", pid: 0, want: codes.InvalidArgument},
		{name: "negative pid", pid: -1, want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wa.Attest(context.Background(), &workloadattestorv1.AttestRequest{Pid: tt.pid})
			if status.Code(err) != tt.want {
				t.Fatalf("Attest(%d) = %v, want %v", tt.pid, err, tt.want)
			}
		})
	}
}

func TestFailConfigure(t *testing.T) {
	_, cfg := load(t)
	err := configure(t, cfg, "fail_configure = true")
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "fail_configure is set" {
		t.Fatalf("Configure = %v, want InvalidArgument fail_configure is set", err)
	}
}

func TestRealID(t *testing.T) {
	procStatus := []byte("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t27\t27\t27\t27\n")
	tests := []struct {
		key, want string
		wantErr   bool
	}{
		{key: "Uid:", want: "1000"},
		{key: "Gid:", want: "27"},
		{key: "Groups:", wantErr: true},
	}
	for _, tt := range tests {
		got, err := realID(procStatus, tt.key)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("realID(%q) = %q, %v; want %q, error %v", tt.key, got, err, tt.want, tt.wantErr)
		}
	}
	if _, err := realID([]byte("Uid:\tnope\n"), "Uid:"); err == nil {
		t.Error("realID accepted a non-numeric uid")
	}
}
