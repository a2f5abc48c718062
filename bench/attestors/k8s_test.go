package attestors

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
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

// k8sReport is this file's share of the report, written to
// ../RESULTS-attestors-k8s.md by TestK8sFetchX509SVID under BENCH_REPORT=1.
var k8sReport struct {
	latency  string
	verdicts []string
}

// TestK8sLatency measures per-call attestation latency of a pod
// container's init process: unix (the baseline), k8s from its cached pod
// list, and k8s fetching the list on every call. The target: a
// cached k8s attestation within 50 µs at p99.
func TestK8sLatency(t *testing.T) {
	p := startK8sPod(t)
	fd, err := sysunix.PidfdOpen(p.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sysunix.Close(fd)
	rows := []struct {
		name string
		a    attestor
		n    int
		want string
	}{
		{"unix (baseline)", unix.New(unix.Config{}), size(200, 5000), "unix:uid:0"},
		{"k8s, cached", p.newK8s(t, true), size(200, 20000), "k8s:pod-uid:" + p.uid},
		{fmt.Sprintf("k8s, uncached (every call fetches /pods, %d pods, over TLS)", fillerPods+1), p.newK8s(t, false), size(50, 2000), "k8s:pod-uid:" + p.uid},
	}
	var out strings.Builder
	out.WriteString("| attestor | calls | p50 | p99 (median of 5 batches) | machine floor p99 |\n|---|---:|---:|---:|---:|\n")
	ctx := context.Background()
	p50s, p99s := make([]time.Duration, len(rows)), make([]time.Duration, len(rows))
	for ri, r := range rows {
		call := func() time.Duration {
			s := time.Now()
			sel, err := r.a.Attest(ctx, int32(p.pid), fd)
			took := time.Since(s)
			if err != nil {
				t.Fatalf("%s: %v", r.name, err)
			}
			if !slices.ContainsFunc(sel, func(s *types.Selector) bool { return s.Type+":"+s.Value == r.want }) {
				t.Fatalf("%s: selectors lack %s", r.name, r.want)
			}
			return took
		}
		runtime.GC()
		warm := make([]time.Duration, 50)
		for i := range warm {
			warm[i] = call()
		}
		typical, _ := percentiles(warm)
		dur, floor := make([]time.Duration, r.n), make([]time.Duration, r.n)
		for i := range dur {
			dur[i] = call()
			s := time.Now()
			for time.Since(s) < typical {
			}
			floor[i] = time.Since(s)
		}
		p50, _ := percentiles(slices.Clone(dur))
		p99, f99 := batchP99(dur), batchP99(floor)
		p50s[ri], p99s[ri] = p50, p99
		fmt.Fprintf(&out, "| %s | %d | %s | %s | %s |\n", r.name, r.n, p50.Round(100*time.Nanosecond), p99.Round(100*time.Nanosecond), f99.Round(100*time.Nanosecond))
	}
	t.Log("\n" + out.String())
	k8sReport.latency = out.String()
	k8sReport.verdicts = append(k8sReport.verdicts,
		verdict(us(p99s[1]) <= 50, "cached k8s attestation p99 <= 50 µs (%.1f µs; unix alone %.1f µs, uncached k8s %.1f µs)", us(p99s[1]), us(p99s[0]), us(p99s[2])))
	// The point of the cache: it saves the kubelet round trip.
	if p50s[1] >= p50s[2] {
		t.Errorf("cached k8s p50 %v is not below uncached p50 %v", p50s[1], p50s[2])
	}
}

// TestK8sFetchX509SVID measures new-connection FetchX509SVID calls from a
// process in a pod container's cgroups, with unix and k8s configured
// together as an agent does, the SVID granted by k8s:pod-uid (the
// selector every spire-controller-manager entry carries).
func TestK8sFetchX509SVID(t *testing.T) {
	p := startK8sPod(t)
	sel := &types.Selector{Type: k8s.SelectorType, Value: "pod-uid:" + p.uid}
	n := size(20, 1000)
	rows := []struct {
		name string
		as   []agentapi.Attestor
		n    int
	}{
		{"unix + k8s, cached", []agentapi.Attestor{unix.New(unix.Config{}), p.newK8s(t, true)}, n},
		{"unix + k8s, uncached", []agentapi.Attestor{unix.New(unix.Config{}), p.newK8s(t, false)}, size(20, 500)},
	}
	var b strings.Builder
	b.WriteString("| attestors | calls | p50 | p99 | calls/s |\n|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		s := fetchWith(t, r.as, sel, p.pid, r.n)
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %.0f |\n", r.name, r.n, s.p50.Round(10*time.Microsecond), s.p99.Round(10*time.Microsecond), s.perSec)
	}
	t.Log("\n" + b.String())
	if fullSize {
		if k8sReport.latency == "" {
			t.Fatal("TestK8sLatency did not run first; no k8s report written (run the whole package)")
		}
		if err := writeK8sReport(b.String()); err != nil {
			t.Fatal(err)
		}
	}
}

func writeK8sReport(fetch string) error {
	var u sysunix.Utsname
	_ = sysunix.Uname(&u)
	kernel := strings.TrimRight(string(u.Release[:]), "\x00")
	var b strings.Builder
	fmt.Fprintf(&b, `# k8s workload attestor vs unix

Machine: %d shared CPUs (other builds running), kernel %s, %s, a private dockerd (Debian's
docker.io, vfs storage) and sim/kubelet (HTTPS, bearer token) listing %d pods. Generated by
`+"`BENCH_REPORT=1 go test -count=1 -timeout 20m ./bench/attestors`"+` (as root).

## Targets (this run)

%s

## Attestation latency per call (a pod container's init process, same pidfd every call)

%s
The first k8s call for a container reads /proc/<pid>/cgroup through a /proc/<pid> directory
handle, finds the pod UID and container ID in its kubepods path (/kubepods/besteffort/pod<uid>/<id>,
SPIRE's new locator), confirms the caller with its pidfd, and learns that the cgroup v2 directory
is that container's; later calls read the caller's cgroup v2 ID from its pidfd (PIDFD_GET_INFO)
and check the pidfd's liveness, without reading /proc. Either way the selectors come from the pod
list fetched within the cache's life (half of poll_retry_interval, as SPIRE; selector values are
built once per fetch) or, uncached, from /pods fetched over a kept-alive TLS connection and parsed
on every call. The unix row is the baseline of the same run. The machine floor is a busy loop as
long as the row's typical call, run between its calls: its p99 is what code of that length gets on
this shared machine whatever it does.

## New-connection FetchX509SVID through go-spiffe (a process in the pod container's cgroups)

%s
Each call is `+"`workloadapi.FetchX509SVID`"+` on a new connection to a real Workload API server
(agent/workloadapi) holding real SVIDs, from a copy of the test binary moved into the pod
container's cgroups; unix and k8s are configured together and the entry's selector is
k8s:pod-uid.
`, runtime.NumCPU(), kernel, runtime.Version(), fillerPods+1, strings.Join(k8sReport.verdicts, "\n"), k8sReport.latency, fetch)
	return os.WriteFile("../RESULTS-attestors-k8s.md", []byte(b.String()), 0o644)
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
