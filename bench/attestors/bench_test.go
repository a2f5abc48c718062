package attestors

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

// fullSize is set by BENCH_REPORT=1: the tests then run at the sizes the
// report quotes and write the results file; otherwise they run small
// enough for every `go test` and only check their invariants.
var fullSize = os.Getenv("BENCH_REPORT") == "1"

// size returns full under BENCH_REPORT=1, else tiny.
func size(tiny, full int) int {
	if fullSize {
		return full
	}
	return tiny
}

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		os.Exit(fetchHelper(addr))
	}
	code := dockerd.Main(m)
	if code == 0 && fullSize {
		if err := writeReport(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

const svidClient = "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"

// benchLabel is the label of the container the benchmarks attest.
const benchLabel = "app:bench"

type attestor interface {
	Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error)
}

// benchContainer starts the container every row attests.
func benchContainer(t *testing.T) (*dockerd.Daemon, *dockerd.Container) {
	t.Helper()
	d := dockerd.Start(t)
	img := d.Image(t, map[string]string{"/svid-client": svidClient})
	c := d.Run(t, dockerd.RunOptions{Image: img, Cmd: []string{"/svid-client", "-sleep"}, Labels: map[string]string{"app": "bench"}, Env: []string{"ROLE=bench"}})
	return d, c
}

// newDocker returns a docker attestor on d, subscribed to its events (so
// that, with the cache on, what it inspects is kept).
func newDocker(t *testing.T, d *dockerd.Daemon, cacheSize int) *docker.Attestor {
	t.Helper()
	a, err := docker.New(docker.Config{SocketPath: d.Host, CacheSize: cacheSize, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

// newDockerProc is a cached docker attestor that locates every caller
// from /proc/<pid>/cgroup: verbose_container_locator_logs turns the
// cgroup ID path off, so that each call has something to log.
func newDockerProc(t *testing.T, d *dockerd.Daemon) *docker.Attestor {
	t.Helper()
	a, err := docker.New(docker.Config{SocketPath: d.Host, VerboseContainerLocatorLogs: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

// batchP99 is the median of the p99s of five consecutive batches of d (of
// d's p99 when d is too short to split): one burst of interruptions on
// this shared machine moves one batch, not the figure.
func batchP99(d []time.Duration) time.Duration {
	const batches = 5
	if len(d) < batches*100 {
		_, p99 := percentiles(slices.Clone(d))
		return p99
	}
	n := len(d) / batches
	p99s := make([]time.Duration, batches)
	for i := range p99s {
		_, p99s[i] = percentiles(slices.Clone(d[i*n : (i+1)*n]))
	}
	slices.Sort(p99s)
	return p99s[batches/2]
}

// round keeps three significant figures, so that sub-microsecond rows
// still say something.
func round(d time.Duration) time.Duration {
	switch {
	case d < time.Microsecond:
		return d.Round(10 * time.Nanosecond)
	case d < 100*time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	default:
		return d.Round(time.Microsecond)
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// row is one attestor measured on one process.
type row struct {
	name string
	a    attestor
	pid  int
	fd   int
	n    int
	// want is a selector the row must return.
	want string
}

type measured struct{ p50, p99 time.Duration }

// measure times each row's calls and adds its line to the report's
// latency table.
func measure(t *testing.T, rows ...row) []measured {
	t.Helper()
	ctx := context.Background()
	out := make([]measured, len(rows))
	for ri, r := range rows {
		call := func() time.Duration {
			s := time.Now()
			sel, err := r.a.Attest(ctx, int32(r.pid), r.fd)
			took := time.Since(s)
			if err != nil {
				t.Fatalf("%s: %v", r.name, err)
			}
			if !slices.ContainsFunc(sel, func(s *types.Selector) bool { return s.Type+":"+s.Value == r.want }) {
				t.Fatalf("%s: selectors lack %s", r.name, r.want)
			}
			return took
		}
		// Start each row from a clean heap, so that no row pays for the
		// garbage of the one before.
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
		out[ri] = measured{p50, p99}
		line := fmt.Sprintf("| %s | %d | %s | %s | %s |\n", r.name, r.n, round(p50), round(p99), round(f99))
		t.Log(line)
		results.latency = append(results.latency, line)
	}
	return out
}

func openPidfd(t testing.TB, pid int) int {
	t.Helper()
	fd, err := sysunix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sysunix.Close(fd) })
	return fd
}

// TestLatency measures per-call attestation latency: unix (the baseline)
// on a real container's init process, then each container attestor cached
// and uncached, and systemd on a real unit. The targets: cached
// docker and k8s attestations within 50 µs at p99.
func TestLatency(t *testing.T) {
	d, c := benchContainer(t)
	fd := openPidfd(t, c.PID)
	base := measure(t, row{"unix (baseline)", unix.New(unix.Config{}), c.PID, fd, size(200, 5000), "unix:uid:0"})[0]
	ran("latency/unix")
	t.Run("docker", func(t *testing.T) { dockerLatency(t, d, c.PID, fd, base) })
	t.Run("k8s", func(t *testing.T) { k8sLatency(t, base) })
	t.Run("systemd", func(t *testing.T) { systemdLatency(t) })
}

// dockerLatency is the docker attestor's share of TestLatency.
func dockerLatency(t *testing.T, d *dockerd.Daemon, pid, fd int, base measured) {
	want := "docker:label:" + benchLabel
	m := measure(t,
		row{"docker, cached", newDocker(t, d, 0), pid, fd, size(200, 20000), want},
		row{"docker, cached, reading /proc every call (as without PIDFD_GET_INFO, before Linux 6.13)", newDockerProc(t, d), pid, fd, size(200, 20000), want},
		row{"docker, uncached (every call inspects)", newDocker(t, d, -1), pid, fd, size(50, 2000), want},
	)
	cached, uncached := m[0], m[2]
	results.verdicts = append(results.verdicts,
		verdict(us(cached.p99) <= 50, "cached docker attestation p99 <= 50 µs (%.1f µs; unix alone %.1f µs, uncached docker %.1f µs)", us(cached.p99), us(base.p99), us(uncached.p99)))
	// The point of the cache: it saves the engine round trip.
	if cached.p50 >= uncached.p50 {
		t.Errorf("cached docker p50 %v is not below uncached p50 %v", cached.p50, uncached.p50)
	}
	ran("latency/docker")
}

// BenchmarkDockerCached is the cached docker row as a Go benchmark, for
// profiling: go test -run '^$' -bench DockerCached -cpuprofile cpu.out.
func BenchmarkDockerCached(b *testing.B) {
	d := dockerd.Start(b)
	img := d.Image(b, map[string]string{"/svid-client": svidClient})
	c := d.Run(b, dockerd.RunOptions{Image: img, Cmd: []string{"/svid-client", "-sleep"}, Labels: map[string]string{"app": "bench"}})
	fd, err := sysunix.PidfdOpen(c.PID, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sysunix.Close(fd)
	a, err := docker.New(docker.Config{SocketPath: d.Host, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if err := a.WaitSubscribed(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := a.Attest(ctx, int32(c.PID), fd); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(ctx, int32(c.PID), fd); err != nil {
			b.Fatal(err)
		}
	}
}
