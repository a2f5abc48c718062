package catalog

import (
	"context"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/lineage"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// WorkloadAttestors are the plugins that turn a Workload API caller into
// selectors.
var WorkloadAttestors = catalog.Table[Deps, workloadapi.Attestor]{
	Type: config.TypeWorkloadAttestor,
	Builtins: []catalog.Builtin[Deps, workloadapi.Attestor]{
		{Name: unix.SelectorType, New: newUnix},
		{Name: lineage.SelectorType, New: newLineage},
		{Name: "docker", New: newDocker},
		{Name: "k8s", New: newK8s},
		{Name: "systemd", New: newSystemd},
	},
}

func newUnix(_ context.Context, p hclconf.Plugin, _ Deps) (workloadapi.Attestor, error) {
	var data struct {
		DiscoverWorkloadPath bool  `hcl:"discover_workload_path"`
		WorkloadSizeLimit    int64 `hcl:"workload_size_limit"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	return unix.New(unix.Config{DiscoverWorkloadPath: data.DiscoverWorkloadPath, WorkloadSizeLimit: data.WorkloadSizeLimit}), nil
}

func newLineage(_ context.Context, p hclconf.Plugin, deps Deps) (workloadapi.Attestor, error) {
	var data struct {
		DiscoverWorkloadPath bool   `hcl:"discover_workload_path"`
		WorkloadSizeLimit    int64  `hcl:"workload_size_limit"`
		MaxAncestors         int    `hcl:"max_ancestors"`
		GracePeriod          string `hcl:"grace_period"`
		MaxProcesses         int    `hcl:"max_processes"`
		DisableEBPF          bool   `hcl:"disable_ebpf"`
		// Groups change without a traced event, so reading them costs a
		// /proc read per call; this turns them off.
		SkipSupplementaryGroups bool `hcl:"skip_supplementary_groups"`
	}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	var grace time.Duration
	if data.GracePeriod != "" {
		d, err := p.ParseDuration("grace_period", data.GracePeriod)
		if err != nil {
			return nil, err
		}
		grace = d
	}
	return lineage.New(lineage.Config{
		DiscoverWorkloadPath: data.DiscoverWorkloadPath, WorkloadSizeLimit: data.WorkloadSizeLimit,
		MaxAncestors: data.MaxAncestors, GracePeriod: grace, MaxProcesses: data.MaxProcesses,
		DisableEBPF: data.DisableEBPF, SkipSupplementaryGroups: data.SkipSupplementaryGroups,
		Log: deps.Log.With("plugin", "lineage"),
	}), nil
}
