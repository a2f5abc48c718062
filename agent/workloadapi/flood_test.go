package workloadapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// floodEnv makes the test binary a flooder: it opens WLAPI_FLOOD_N
// connections to WLAPI_SOCKET, reports how many the agent kept, and holds
// them until its stdin closes. init, not TestMain, so that pidreuse_test's
// TestMain stays as it is.
const floodEnv = "WLAPI_FLOOD_N"

const nobody = 65534

func init() {
	if v := os.Getenv(floodEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			err = flood(os.Getenv("WLAPI_SOCKET"), n)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "flood:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// flood opens n connections that never send a preface, prints "HELD h
// REFUSED r", and holds the kept ones until stdin closes.
func flood(sock string, n int) error {
	conns, refused, err := wltest.Flood(sock, n, nil, 2*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("HELD %d REFUSED %d\n", n-refused, refused)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// TestFloodFromOneUIDLeavesOthersServed: uid nobody opens connections up
// to and beyond its cap and holds them; the extra ones are refused, the
// refusal is logged once with the uid and the cap, root's go-spiffe client
// still gets its X509-SVID, and the slots are freed when the flood ends.
func TestFloodFromOneUIDLeavesOthersServed(t *testing.T) {
	simtest.RequireRoot(t)
	const perUID, flooders = 8, 24
	// The flood's connections never send a preface; a long handshake
	// timeout keeps them held for the whole test.
	e := newLimitedEnv(t, Limits{MaxConnections: 64, MaxConnectionsPerUID: perUID, HandshakeTimeout: time.Minute})
	uid, _, _, _ := selfSelectors(t)
	e.mgr.Set(e.ca.Issue(t, "/root-workload"), uid)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wltest.CopyForOthers(t, e.dir), "-test.run=^$")
	cmd.Env = append(os.Environ(), floodEnv+"="+strconv.Itoa(flooders), "WLAPI_SOCKET="+e.socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody},
		Pdeathsig:  syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("flooder: %v; stderr:\n%s", err, stderr.String())
	}
	var held, refused int
	if _, err := fmt.Sscanf(line, "HELD %d REFUSED %d", &held, &refused); err != nil {
		t.Fatalf("flooder said %q: %v", line, err)
	}
	if held != perUID || refused != flooders-perUID {
		t.Fatalf("flooder kept %d and was refused %d, want %d and %d", held, refused, perUID, flooders-perUID)
	}
	key := strconv.Itoa(nobody)
	if _, n := e.ln.Slots().Count(key); n != perUID {
		t.Fatalf("agent holds %d connections of uid %s, want %d", n, key, perUID)
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "per-peer connection limit reached"); n != 1 {
		t.Fatalf("%d refusal lines within the log interval, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, "uid="+key) || !strings.Contains(logs, "per_peer_limit="+strconv.Itoa(perUID)) || !strings.Contains(logs, "level=WARN") {
		t.Fatalf("refusal line does not name the uid and the cap at WARN:\n%s", logs)
	}

	// Root is served while nobody sits at its cap.
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+e.socket))
	if err != nil {
		t.Fatalf("root's fetch during the flood: %v", err)
	}
	if svid.ID.Path() != "/root-workload" {
		t.Fatalf("root got %s", svid.ID)
	}

	// The flood ends: its slots are freed.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("flooder: %v; stderr:\n%s", err, stderr.String())
	}
	waitFor(t, 10*time.Second, "the flood's slots were not freed", func() bool {
		_, n := e.ln.Slots().Count(key)
		return n == 0
	})
}
