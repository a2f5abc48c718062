// Package workloadattestor_test runs the workload attestor conformance
// suite against every built-in attestor and an external SDK plugin loaded
// through the plugin host as a real process.
package workloadattestor_test

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo/cgrouptest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker/dockertest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/external"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/k8s"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/lineage"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/systemd"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/workloadattestortest"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe-hw/spire-hw/sim/kubelet"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
)

func TestUnix(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  unix.Config
	}{
		{"Default", unix.Config{}},
		{"DiscoverWorkloadPath", unix.Config{DiscoverWorkloadPath: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			workloadattestortest.Run(t, unix.SelectorType, func(*testing.T) workloadapi.Attestor {
				return unix.New(tc.cfg)
			})
		})
	}
}

func TestLineage(t *testing.T) {
	workloadattestortest.Run(t, lineage.SelectorType, func(t *testing.T) workloadapi.Attestor {
		a := lineage.New(lineage.Config{DisableEBPF: true, DiscoverWorkloadPath: true, Log: slog.New(slog.DiscardHandler)})
		t.Cleanup(func() { _ = a.Close() })
		return a
	}, workloadattestortest.AlsoSelectorTypes(unix.SelectorType))
}

// TestExternal runs the suite against test/plugins/workloadattestor started
// by the plugin host, so the answer crosses go-plugin and the SDK's
// handshake as in production.
func TestExternal(t *testing.T) {
	const name = "ext"
	cmd := pluginbuild.Build(t, "workloadattestor")
	workloadattestortest.Run(t, name, func(t *testing.T) workloadapi.Attestor {
		p, err := plugin.Load(context.Background(), plugin.Config{
			Type:        "WorkloadAttestor",
			Name:        name,
			Cmd:         cmd,
			TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
			Service:     workloadattestorv1.WorkloadAttestor_ServiceDesc.ServiceName,
			Log:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return external.New(p.Conn(), name)
	})
}

// TestDocker runs the suite with the test process moved into a real
// container's cgroups (those of its hierarchies it sits at the root of),
// so that the docker attestor sees it as a process of that container and
// inspects the container on a private dockerd. The process moves back
// before the container is removed.
func TestDocker(t *testing.T) {
	d := dockerd.Start(t)
	img := d.Image(t, map[string]string{"/svid-client": "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"})
	c := d.Run(t, dockerd.RunOptions{Image: img, Cmd: []string{"/svid-client", "-sleep"}, Labels: map[string]string{"app": "conformance"}})
	t.Cleanup(dockertest.JoinCgroupsOf(t, os.Getpid(), c.PID))
	workloadattestortest.Run(t, docker.SelectorType, func(t *testing.T) workloadapi.Attestor {
		a, err := docker.New(docker.Config{SocketPath: d.Host, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		return a
	})
}

// TestK8s runs the suite with the test process moved into the cgroups of a
// real container started under a kubepods cgroup parent, listed as a pod's
// container by a simulated kubelet on TLS with token authentication, so
// the k8s attestor finds the pod in the process's cgroup paths and its
// selectors in the kubelet's pod list.
func TestK8s(t *testing.T) {
	d := dockerd.Start(t)
	img := d.Image(t, map[string]string{"/svid-client": "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"})
	kl := kubelet.Start(t, kubelet.Options{})
	uid := kubelet.NewUID()
	st, c := kubelet.RunContainer(t, d, uid, "conformance", img, []string{"/svid-client", "-sleep"})
	kl.PutPod(kubelet.Pod{Name: "conformance", Namespace: "default", UID: uid, ServiceAccount: "default", NodeName: kl.NodeName(), Containers: []kubelet.Container{st}})
	caPath, tokenPath := kl.WriteFiles(t, t.TempDir())
	t.Cleanup(dockertest.JoinCgroupsOf(t, os.Getpid(), c.PID))
	workloadattestortest.Run(t, k8s.SelectorType, func(t *testing.T) workloadapi.Attestor {
		a, err := k8s.New(k8s.Config{KubeletSecurePort: kl.SecurePort(), KubeletCAPath: caPath, TokenPath: tokenPath, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		return a
	})
}

// TestSystemd runs the suite against the systemd attestor as the agent
// builds it. Where systemd runs, the test process is already in a unit the
// manager knows; where it does not (CI containers), the attestor names the
// unit from the cgroup alone, so the test process joins real cgroups named
// as systemd names a service.
func TestSystemd(t *testing.T) {
	if !systemd.Booted() {
		cgrouptest.New(t, "system.slice/spirehw-test-"+strconv.Itoa(os.Getpid())+".service").Enter(t)
	}
	workloadattestortest.Run(t, systemd.SelectorType, func(t *testing.T) workloadapi.Attestor {
		a := systemd.New(systemd.Config{Log: slog.New(slog.DiscardHandler)})
		t.Cleanup(func() { _ = a.Close() })
		return a
	})
}
