package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/peer"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// helperEnv selects a helper mode when the test binary re-executes itself.
const helperEnv = "WLAPI_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "pidreuse-agent":
		// A runtime thread may take A's PID before B does; then only a
		// new run helps.
		err := pidReuseAgent()
		for try := 0; errors.Is(err, simtest.ErrPIDTaken) && try < 4; try++ {
			err = pidReuseAgent()
		}
		if err != nil {
			fmt.Println("PIDREUSE FAIL:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "caller":
		if err := pidReuseCaller(os.Getenv("WLAPI_SOCKET")); err != nil {
			fmt.Fprintln(os.Stderr, "caller:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode")
		os.Exit(2)
	}
}

// TestPIDReuse runs an agent and two workloads in a fresh PID namespace: the
// caller A connects and is killed and reaped mid-attestation, then process B
// is made to take A's PID (ns_last_pid). The agent must notice through A's
// pidfd and answer Unauthenticated rather than hand out B's identity.
func TestPIDReuse(t *testing.T) {
	simtest.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=pidreuse-agent")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	out, err := cmd.CombinedOutput()
	t.Logf("helper output:\n%s", out)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(out), "PIDREUSE SETUP:") {
			simtest.Skip(t, "PID namespace setup impossible here: "+string(out))
		}
		t.Fatalf("helper failed: %v", err)
	}
	if !strings.Contains(string(out), "PIDREUSE OK") {
		t.Fatal("helper did not report success")
	}
}

// gate is an attestor that trusts PIDs, as a naive attestor would: it waits
// until the test has swapped the process behind the PID, then reads the UID
// from /proc/<pid>. It also records what the pidfd it was handed says.
type gate struct {
	attesting chan int32
	release   chan struct{}

	mu        sync.Mutex
	sawUID    string
	pidfdErr  error
	sawCalled bool
}

func (g *gate) Attest(_ context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	g.attesting <- pid
	<-g.release
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	uid := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid = f[1]
		}
	}
	g.mu.Lock()
	g.sawCalled = true
	g.sawUID = uid
	g.pidfdErr = peer.CheckPIDFD(pidfd)
	g.mu.Unlock()
	return []*types.Selector{{Type: "unix", Value: "uid:" + uid}}, nil
}

const reusedUID = 4321

func pidReuseAgent() error {
	setup := func(err error) error { return fmt.Errorf("PIDREUSE SETUP: %w", err) }
	if os.Getpid() != 1 {
		return setup(fmt.Errorf("not PID 1 in a new namespace (pid %d)", os.Getpid()))
	}
	if err := sysunix.Mount("", "/", "", sysunix.MS_REC|sysunix.MS_PRIVATE, ""); err != nil {
		return setup(fmt.Errorf("make / private: %w", err))
	}
	if err := sysunix.Mount("proc", "/proc", "proc", sysunix.MS_NOSUID|sysunix.MS_NODEV|sysunix.MS_NOEXEC, ""); err != nil {
		return setup(fmt.Errorf("mount /proc: %w", err))
	}

	t := &fakeTB{}
	ca := wltest.NewCA(t, td)
	mgr := wltest.NewManager(t, ca)
	// The identity that must not leak: the one for B's UID.
	mgr.Set(ca.Issue(t, "/victim-b"), &types.Selector{Type: "unix", Value: "uid:" + strconv.Itoa(reusedUID)})

	g := &gate{attesting: make(chan int32, 1), release: make(chan struct{})}
	h := New(Config{Manager: mgr, Attestors: []Attestor{g}, TrustDomain: td, Log: quietLog()})

	var (
		resMu  sync.Mutex
		resErr error
		resSet bool
		resCh  = make(chan struct{})
	)
	record := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		resMu.Lock()
		resErr, resSet = err, true
		resMu.Unlock()
		close(resCh)
		return resp, err
	}
	dir, err := os.MkdirTemp("", "wlns")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := dir + "/api.sock"
	l, err := Listen(sock)
	if err != nil {
		return err
	}
	srv, err := NewServer(h, grpc.UnaryInterceptor(record))
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	a := exec.Command(exe, "-test.run=^$")
	a.Env = append(os.Environ(), helperEnv+"=caller", "WLAPI_SOCKET="+sock)
	a.Stderr = os.Stdout
	if err := a.Start(); err != nil {
		return err
	}

	var pid int32
	select {
	case pid = <-g.attesting:
	case <-time.After(20 * time.Second):
		a.Process.Kill()
		return errors.New("caller never reached attestation")
	}
	if int(pid) != a.Process.Pid {
		return fmt.Errorf("attesting pid %d, caller is %d", pid, a.Process.Pid)
	}

	// A dies and is reaped; its socket stays open (its child holds it), so
	// nothing but the pidfd can tell the agent.
	if err := a.Process.Kill(); err != nil {
		return err
	}
	_ = a.Wait()

	// B takes A's PID.
	b, err := simtest.StartWithPID(int(pid), func() *exec.Cmd {
		b := exec.Command("sleep", "60")
		b.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: reusedUID, Gid: reusedUID}}
		return b
	})
	if errors.Is(err, simtest.ErrPIDTaken) {
		close(g.release)
		return err
	}
	if err != nil {
		return setup(fmt.Errorf("start B as pid %d: %w", pid, err))
	}
	defer func() { b.Process.Kill(); _ = b.Wait() }()
	exeB, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	fmt.Printf("caller A (pid %d) killed and reaped; pid %d now runs %s (err %v)\n", pid, pid, exeB, err)

	close(g.release)
	select {
	case <-resCh:
	case <-time.After(20 * time.Second):
		return errors.New("handler never returned")
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	resMu.Lock()
	defer resMu.Unlock()
	jwtCalls := mgr.JWTCalls()

	fmt.Printf("naive /proc read saw uid %s; pidfd check: %v; handler: %v; manager JWT mints: %d\n", g.sawUID, g.pidfdErr, resErr, jwtCalls)
	switch {
	case g.sawUID != strconv.Itoa(reusedUID):
		return fmt.Errorf("PID was not reused by B: /proc/%d showed uid %q", pid, g.sawUID)
	case !errors.Is(g.pidfdErr, peer.ErrExited):
		return fmt.Errorf("pidfd check on A's pidfd = %v, want ErrExited", g.pidfdErr)
	case !resSet || status.Code(resErr) != codes.Unauthenticated:
		return fmt.Errorf("handler returned %v, want Unauthenticated", resErr)
	case jwtCalls != 0:
		return fmt.Errorf("manager minted %d JWT-SVIDs for a dead caller", jwtCalls)
	}
	fmt.Println("PIDREUSE OK")
	return nil
}

// pidReuseCaller connects, hands a copy of the socket to a child (so the
// connection outlives this process), and calls FetchJWTSVID, which blocks in
// the agent until this process has been killed.
func pidReuseCaller(sock string) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return err
	}
	holder := exec.Command("sleep", "60")
	holder.ExtraFiles = []*os.File{f}
	if err := holder.Start(); err != nil {
		return err
	}
	f.Close()
	conn, err := grpc.NewClient("passthrough:///agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return c, nil }))
	if err != nil {
		return err
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true")
	_, err = workload.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
	return fmt.Errorf("call returned while it should have been killed: %v", err)
}

// fakeTB lets the helper (which runs outside the testing framework) use the
// certificate helpers; a failure there aborts the helper.
type fakeTB struct{ testing.TB }

func (fakeTB) Helper() {}
func (fakeTB) Fatal(args ...any) {
	fmt.Println("PIDREUSE FAIL:", fmt.Sprint(args...))
	os.Exit(1)
}
func (f fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }
