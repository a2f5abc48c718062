package attestors

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	agentapi "github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/docker/dockertest"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// helperEnv makes the test binary a Workload API client instead of a test
// run; helperEnv_N is how many calls it makes.
const helperEnv = "ATTESTORS_BENCH_FETCH"

// fetchHelper waits for a line on stdin (the benchmark moves it into the
// container's cgroups meanwhile), then makes n new-connection
// FetchX509SVID calls, printing each one's nanoseconds, and prints the
// SPIFFE ID of the last SVID verified against the bundle served.
func fetchHelper(addr string) int {
	n, _ := strconv.Atoi(os.Getenv(helperEnv + "_N"))
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "fetch helper: wait for start:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for range n {
		start := time.Now()
		if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr)); err != nil {
			fmt.Fprintln(os.Stderr, "fetch helper:", err)
			return 1
		}
		fmt.Println(time.Since(start).Nanoseconds())
	}
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetch helper:", err)
		return 1
	}
	id, _, err := x509svid.Verify(x.DefaultSVID().Certificates, x.Bundles)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetch helper:", err)
		return 1
	}
	fmt.Println("id", id)
	return 0
}

type fetchStats struct {
	p50, p99 time.Duration
	perSec   float64
}

// fetchWith serves the Workload API with attestors as, holding one entry
// (/bench, selector sel), and runs n+1 calls (the first, which warms the
// caches, is not counted) from a client in container pid's cgroups.
func fetchWith(t *testing.T, as []agentapi.Attestor, sel *types.Selector, containerPID, n int) fetchStats {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := workloadapitest.NewCA(t, td)
	m := workloadapitest.NewManager(t, ca)
	m.Set(ca.Issue(t, "/bench"), sel)
	h := agentapi.New(agentapi.Config{Manager: m, Attestors: as, TrustDomain: td, Log: slog.New(slog.DiscardHandler)})
	dir, err := os.MkdirTemp("", "attestors-bench")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "api.sock")
	l, err := agentapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := agentapi.NewServer(h)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=unix://"+sock, helperEnv+"_N="+strconv.Itoa(n+1))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	restore := dockertest.JoinCgroupsOf(t, cmd.Process.Pid, containerPID)
	defer restore()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	var d []time.Duration
	var id string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "id "); ok {
			id = v
			continue
		}
		ns, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("client output %q", sc.Text())
		}
		d = append(d, time.Duration(ns))
	}
	if id != "spiffe://example.org/bench" {
		t.Fatalf("client verified SVID %q", id)
	}
	d = d[1:]
	var total time.Duration
	for _, x := range d {
		total += x
	}
	p50, p99 := percentiles(d)
	return fetchStats{p50: p50, p99: p99, perSec: float64(len(d)) / total.Seconds()}
}

// fetchRow is one Workload API configuration measured.
type fetchRow struct {
	name string
	as   []agentapi.Attestor
	sel  *types.Selector
	n    int
}

// fetchRows measures each row from a client in container pid's cgroups
// and adds its line to the report's fetch table.
func fetchRows(t *testing.T, pid int, rows ...fetchRow) {
	t.Helper()
	for _, r := range rows {
		s := fetchWith(t, r.as, r.sel, pid, r.n)
		line := fmt.Sprintf("| %s | %d | %s | %s | %.0f |\n", r.name, r.n, s.p50.Round(10*time.Microsecond), s.p99.Round(10*time.Microsecond), s.perSec)
		t.Log(line)
		results.fetch = append(results.fetch, line)
	}
}

// TestFetchX509SVID measures new-connection FetchX509SVID calls from a
// process in a real container's cgroups: unix alone (the baseline), then
// unix with each container attestor, cached and uncached.
func TestFetchX509SVID(t *testing.T) {
	d, c := benchContainer(t)
	fetchRows(t, c.PID, fetchRow{"unix alone (baseline)", []agentapi.Attestor{unix.New(unix.Config{})}, &types.Selector{Type: unix.SelectorType, Value: "uid:0"}, size(20, 1000)})
	ran("fetch/unix")
	t.Run("docker", func(t *testing.T) {
		label := &types.Selector{Type: docker.SelectorType, Value: "label:" + benchLabel}
		fetchRows(t, c.PID,
			fetchRow{"unix + docker, cached", []agentapi.Attestor{unix.New(unix.Config{}), newDocker(t, d, 0)}, label, size(20, 1000)},
			fetchRow{"unix + docker, uncached", []agentapi.Attestor{unix.New(unix.Config{}), newDocker(t, d, -1)}, label, size(20, 500)},
		)
		ran("fetch/docker")
	})
	t.Run("k8s", k8sFetch)
}
