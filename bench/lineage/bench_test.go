package lineage

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/lineage"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	tracer "github.com/spiffe-hw/spire-hw/ebpf/lineage"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

// fullSize is set by BENCH_REPORT=1: the tests then run at the sizes the
// report quotes and write the results files; otherwise they run small
// enough for every `go test` and only check their invariants.
var fullSize = os.Getenv("BENCH_REPORT") == "1"

// size returns full under BENCH_REPORT=1, else tiny.
func size(tiny, full int) int {
	if fullSize {
		return full
	}
	return tiny
}

type attestor interface {
	Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error)
}

func requireEBPF(t *testing.T) {
	simtest.RequireRoot(t)
	if err := tracer.Supported(); err != nil {
		simtest.Skip(t, err.Error())
	}
}

// bigBinary is a 50 MB executable: /bin/sleep padded at the end.
func bigBinary(t *testing.T) string {
	b, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "big-workload")
	pad := make([]byte, 50<<20-len(b))
	for i := range pad {
		pad[i] = byte(i)
	}
	if err := os.WriteFile(path, append(b, pad...), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

// TestLatency measures per-call attestation latency of a live 50 MB workload.
func TestLatency(t *testing.T) {
	requireEBPF(t)
	bin := bigBinary(t)
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(100 * time.Millisecond)
	fd, err := sysunix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sysunix.Close(fd)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lin := lineage.New(lineage.Config{Log: log, SkipSupplementaryGroups: true})
	defer lin.Close()
	linHash := lineage.New(lineage.Config{Log: log, DiscoverWorkloadPath: true, SkipSupplementaryGroups: true})
	defer linHash.Close()
	linGroups := lineage.New(lineage.Config{Log: log, DiscoverWorkloadPath: true})
	defer linGroups.Close()
	rows := []struct {
		name string
		a    attestor
		n    int
	}{
		{"procfs unix, no sha256", unix.New(unix.Config{}), size(200, 2000)},
		{"procfs unix, sha256 (50 MB)", unix.New(unix.Config{DiscoverWorkloadPath: true}), size(3, 30)},
		{"lineage eBPF, no sha256, no supplementary groups", lin, size(2000, 20000)},
		{"lineage eBPF, sha256 (50 MB), no supplementary groups", linHash, size(2000, 20000)},
		{"lineage eBPF, sha256 (50 MB), supplementary groups", linGroups, size(2000, 20000)},
	}
	var out strings.Builder
	out.WriteString("| attestor | calls | p50 | p99 |\n|---|---:|---:|---:|\n")
	ctx := context.Background()
	for _, r := range rows {
		if _, err := r.a.Attest(ctx, int32(cmd.Process.Pid), fd); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		d := make([]time.Duration, r.n)
		for i := range d {
			s := time.Now()
			if _, err := r.a.Attest(ctx, int32(cmd.Process.Pid), fd); err != nil {
				t.Fatal(err)
			}
			d[i] = time.Since(s)
		}
		p50, p99 := percentiles(d)
		fmt.Fprintf(&out, "| %s | %d | %s | %s |\n", r.name, r.n, p50.Round(100*time.Nanosecond), p99.Round(100*time.Nanosecond))
		results.bars = append(results.bars, Bar{Label: r.name, P50: us(p50), P99: us(p99)})
	}
	t.Log("\n" + out.String())
	results.latency = out.String()
	results.verdicts = append(results.verdicts,
		verdict(results.bars[2].P99 <= 10, "lineage attestation p99 <= 10 µs (lookup alone: %.1f µs; with supplementary groups %.1f µs)", results.bars[2].P99, results.bars[4].P99))
	// The point of the table: a lookup beats a walk of /proc.
	if b := results.bars; b[2].P50 >= b[0].P50 {
		t.Errorf("lineage p50 %.1fµs is not below procfs p50 %.1fµs", b[2].P50, b[0].P50)
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// storm runs n short processes (fork + exec + exit), two at a time.
func storm(n int) (time.Duration, error) {
	start := time.Now()
	for i := 0; i < n; i += 2 {
		a, b := exec.Command("/bin/true"), exec.Command("/bin/true")
		if err := a.Start(); err != nil {
			return 0, err
		}
		if err := b.Start(); err != nil {
			return 0, err
		}
		if err := a.Wait(); err != nil {
			return 0, err
		}
		if err := b.Wait(); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// TestStorm compares the wall time of short processes with the tracer off
// and on, alternating to spread noise, and counts drops: 10,000 processes
// in 3 rounds under BENCH_REPORT=1.
func TestStorm(t *testing.T) {
	requireEBPF(t)
	n, rounds := size(200, 10000), size(1, 3)
	var off, on time.Duration
	var drops, events uint64
	for range rounds {
		d, err := storm(n)
		if err != nil {
			t.Fatal(err)
		}
		off += d
		tr, err := tracer.Start(tracer.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		d, err = storm(n)
		if err != nil {
			tr.Close()
			t.Fatal(err)
		}
		on += d
		if err := tr.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		drops += tr.Drops()
		events += tr.Events()
		tr.Close()
	}
	off, on = off/time.Duration(rounds), on/time.Duration(rounds)
	overhead := 100 * (float64(on) - float64(off)) / float64(off)
	res := fmt.Sprintf("| processes | rounds | tracer off | tracer on | overhead | events per round | ring-buffer drops |\n|---:|---:|---:|---:|---:|---:|---:|\n| %d | %d | %s | %s | %+.1f%% | %d | %d |\n",
		n, rounds, off.Round(time.Millisecond), on.Round(time.Millisecond), overhead, events/uint64(rounds), drops)
	t.Log("\n" + res)
	results.storm = res
	results.verdicts = append(results.verdicts,
		verdict(overhead <= 2 && drops == 0, "fork/exec storm: <= 2%% more wall time (%+.1f%%) and zero drops (%d)", overhead, drops))
	if drops != 0 {
		t.Errorf("%d ring-buffer drops", drops)
	}
	// fork, exec and exit of each process at least.
	if events < uint64(3*n*rounds) {
		t.Errorf("%d events for %d processes", events, n*rounds)
	}
}
