package attestors

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	agentapi "github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/k8s"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe-hw/spire-hw/sim/kubelet"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

// k8sPod is a real container under a kubepods cgroup parent on the private
// dockerd, listed by a simulated kubelet (TLS, token) among filler pods, so
// that the pod list has a node's typical size.
type k8sPod struct {
	kl                *kubelet.Kubelet
	caPath, tokenPath string
	uid               string
	pid               int
}

// fillerPods is how many other pods the kubelet lists: a busy node's
// count, so an uncached call parses a realistic list.
const fillerPods = 30

func startK8sPod(t testing.TB) k8sPod {
	t.Helper()
	d := dockerd.Start(t)
	img := d.Image(t, map[string]string{"/svid-client": svidClient})
	kl := kubelet.Start(t, kubelet.Options{})
	uid := kubelet.NewUID()
	st, c := kubelet.RunContainer(t, d, uid, "bench", img, []string{"/svid-client", "-sleep"})
	for i := range fillerPods {
		kl.PutPod(kubelet.Pod{
			Name: fmt.Sprintf("filler-%d", i), Namespace: "default", UID: kubelet.NewUID(), ServiceAccount: "default", NodeName: kl.NodeName(),
			Labels: map[string]string{"app": "filler", "pod-template-hash": "5d8c9b7f4"},
			Owners: []kubelet.Owner{{Kind: "ReplicaSet", Name: "filler-5d8c9b7f4", UID: kubelet.NewUID()}},
			Containers: []kubelet.Container{
				{Name: "app", Image: "example.org/app:1", ImageID: "docker-pullable://example.org/app@sha256:" + strings.Repeat("ab", 32), ContainerID: fmt.Sprintf("docker://%064x", i+1)},
				{Name: "proxy", Image: "example.org/proxy:1", ImageID: "docker-pullable://example.org/proxy@sha256:" + strings.Repeat("cd", 32), ContainerID: fmt.Sprintf("docker://%064x", i+1000)},
			},
		})
	}
	kl.PutPod(kubelet.Pod{Name: "bench", Namespace: "bench", UID: uid, ServiceAccount: "bench", NodeName: kl.NodeName(),
		Labels: map[string]string{"app": "bench"}, Containers: []kubelet.Container{st}})
	caPath, tokenPath := kl.WriteFiles(t, t.TempDir())
	return k8sPod{kl: kl, caPath: caPath, tokenPath: tokenPath, uid: uid, pid: c.PID}
}

// newK8s returns a k8s attestor on p's kubelet. cached=false makes the pod
// list's cache life 1 ns (half a 2 ns retry interval), so every call
// fetches /pods over TLS.
func (p k8sPod) newK8s(t testing.TB, cached bool) *k8s.Attestor {
	t.Helper()
	cfg := k8s.Config{KubeletSecurePort: p.kl.SecurePort(), KubeletCAPath: p.caPath, TokenPath: p.tokenPath, Log: slog.New(slog.DiscardHandler)}
	if cached {
		// Long enough that the cache never expires during a row.
		cfg.PollRetryInterval = time.Hour
	} else {
		cfg.PollRetryInterval = 2 * time.Nanosecond
	}
	a, err := k8s.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// k8sLatency is the k8s attestor's share of TestLatency: a pod
// container's init process, attested from the cached pod list and with
// the list fetched on every call.
func k8sLatency(t *testing.T, base measured) {
	p := startK8sPod(t)
	fd := openPidfd(t, p.pid)
	want := "k8s:pod-uid:" + p.uid
	m := measure(t,
		row{"k8s, cached", p.newK8s(t, true), p.pid, fd, size(200, 20000), want},
		row{fmt.Sprintf("k8s, uncached (every call fetches /pods, %d pods, over TLS)", fillerPods+1), p.newK8s(t, false), p.pid, fd, size(50, 2000), want},
	)
	cached, uncached := m[0], m[1]
	results.verdicts = append(results.verdicts,
		verdict(us(cached.p99) <= 50, "cached k8s attestation p99 <= 50 µs (%.1f µs; unix alone %.1f µs, uncached k8s %.1f µs)", us(cached.p99), us(base.p99), us(uncached.p99)))
	// The point of the cache: it saves the kubelet round trip.
	if cached.p50 >= uncached.p50 {
		t.Errorf("cached k8s p50 %v is not below uncached p50 %v", cached.p50, uncached.p50)
	}
	ran("latency/k8s")
}

// k8sFetch is the k8s attestor's share of TestFetchX509SVID, unix and k8s
// configured together as an agent does, the SVID granted by k8s:pod-uid
// (the selector every spire-controller-manager entry carries).
func k8sFetch(t *testing.T) {
	p := startK8sPod(t)
	sel := &types.Selector{Type: k8s.SelectorType, Value: "pod-uid:" + p.uid}
	fetchRows(t, p.pid,
		fetchRow{"unix + k8s, cached", []agentapi.Attestor{unix.New(unix.Config{}), p.newK8s(t, true)}, sel, size(20, 1000)},
		fetchRow{"unix + k8s, uncached", []agentapi.Attestor{unix.New(unix.Config{}), p.newK8s(t, false)}, sel, size(20, 500)},
	)
	ran("fetch/k8s")
}

// BenchmarkK8sCached is the cached k8s row as a Go benchmark, for
// profiling: go test -run '^$' -bench K8sCached -cpuprofile cpu.out.
func BenchmarkK8sCached(b *testing.B) {
	p := startK8sPod(b)
	fd, err := sysunix.PidfdOpen(p.pid, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sysunix.Close(fd)
	a := p.newK8s(b, true)
	ctx := context.Background()
	if _, err := a.Attest(ctx, int32(p.pid), fd); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(ctx, int32(p.pid), fd); err != nil {
			b.Fatal(err)
		}
	}
}
