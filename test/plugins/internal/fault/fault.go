// Package fault holds the fault keys that every test plugin under test/plugins
// accepts in its configuration, so that end-to-end tests can make any plugin
// die during Configure, refuse its configuration, hang while serving or be
// killed while serving, without a special build of each plugin.
//
// The keys are:
//
//	exit_in_configure = true  # os.Exit(3) inside Configure
//	fail_configure = true     # Configure returns InvalidArgument
//	hang = true               # the plugin's main RPC never returns
//	crash = true              # the plugin's main RPC calls os.Exit(2)
package fault

import (
	"fmt"
	"os"

	"github.com/hashicorp/hcl"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit statuses of the two faults that kill the plugin, distinct so that a
// test reading the host's log can tell which one fired.
const (
	ExitInConfigureStatus = 3
	CrashStatus           = 2
)

// Faults are the fault keys of one plugin configuration.
type Faults struct {
	ExitInConfigure bool `hcl:"exit_in_configure"`
	FailConfigure   bool `hcl:"fail_configure"`
	Hang            bool `hcl:"hang"`
	Crash           bool `hcl:"crash"`
}

// Parse reads the fault keys from a plugin's HCL configuration. Other keys
// are ignored: they belong to the plugin.
func Parse(hclConfig string) (Faults, error) {
	var f Faults
	if err := hcl.Decode(&f, hclConfig); err != nil {
		return Faults{}, fmt.Errorf("fault: parse configuration: %w", err)
	}
	return f, nil
}

// Configure is the common first half of every test plugin's Configure: it
// decodes the HCL configuration into cfg (a pointer to the plugin's own
// struct) and into the fault keys, then applies the Configure-time faults.
// It returns the faults for the plugin to keep and apply with Serve, and
// gRPC status errors, since its caller answers a gRPC request.
func Configure(req *configv1.ConfigureRequest, cfg any) (Faults, error) {
	if err := hcl.Decode(cfg, req.GetHclConfiguration()); err != nil {
		return Faults{}, status.Errorf(codes.InvalidArgument, "unable to decode configuration: %v", err)
	}
	f, err := Parse(req.GetHclConfiguration())
	if err != nil {
		return Faults{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if f.ExitInConfigure {
		os.Exit(ExitInConfigureStatus)
	}
	if f.FailConfigure {
		return Faults{}, status.Error(codes.InvalidArgument, "fail_configure is set")
	}
	return f, nil
}

// Serve applies the serving faults; a plugin calls it first in its main RPC.
// A hang ignores the request's context on purpose: it models a plugin that is
// stuck, which only the host's own deadline or a kill can get out of.
func (f Faults) Serve() {
	if f.Crash {
		os.Exit(CrashStatus)
	}
	if f.Hang {
		select {}
	}
}
