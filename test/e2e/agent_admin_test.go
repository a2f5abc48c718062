package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/debug/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/logger/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/admin"
	wltest "github.com/spiffe-hw/spire-hw/agent/workloadapi/workloadapitest"
	"github.com/spiffe-hw/spire-hw/sim/simtest"
)

// adminFloodEnv makes the test binary a flooder of the admin socket named
// by adminSocketEnv: it opens that many connections that never send a
// preface, prints "HELD h REFUSED r" and holds them until its stdin
// closes. It runs from init, before TestMain builds the binaries.
const (
	adminFloodEnv  = "E2E_ADMIN_FLOOD_N"
	adminSocketEnv = "E2E_ADMIN_SOCKET"
)

func init() {
	v := os.Getenv(adminFloodEnv)
	if v == "" {
		return
	}
	if err := floodAdmin(os.Getenv(adminSocketEnv), v); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func floodAdmin(sock, count string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
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

// adminAgent is an agent with admin_socket_path, launched at log level
// INFO.
type adminAgent struct {
	*agentEnv
	// adminDir holds the admin socket's directory; it is 0750, so that a
	// process of group 0 under another uid reaches the socket, as an
	// operator in the agent's group would.
	adminDir, adminSocket string
}

func startAdminAgent(t *testing.T, s *serverEnv, token string) *adminAgent {
	t.Helper()
	a := newAgent(t, s, agentConfig{nodeAttestor: joinTokenAttestor, workloadAttestor: unixAttestor("")})
	dir, err := os.MkdirTemp("", "e2eadm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	aa := &adminAgent{agentEnv: a, adminDir: dir, adminSocket: filepath.Join(dir, "private", "admin.sock")}
	conf, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	socketLine := fmt.Sprintf("socket_path = %q\n", a.socket)
	text := strings.Replace(string(conf), socketLine, socketLine+fmt.Sprintf("    admin_socket_path = %q\n", aa.adminSocket), 1)
	text = strings.Replace(text, `log_level = "DEBUG"`, `log_level = "INFO"`, 1)
	if !strings.Contains(text, "admin_socket_path") || !strings.Contains(text, `log_level = "INFO"`) {
		t.Fatalf("agent.conf not as expected:\n%s", conf)
	}
	if err := os.WriteFile(a.conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t, token)
	return aa
}

// dial connects to a socket of the agent's as the CLI does.
func dialUnix(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (a *adminAgent) logger(t *testing.T, args ...string) string {
	t.Helper()
	return mustCLI(t, a.dir, "spire-agent", append(append([]string{"logger"}, args...), "-socketPath", a.adminSocket)...)
}

// TestAgentAdminSocket: the agent serves debug/v1 and logger/v1 on
// admin_socket_path (0770) and not on the Workload API socket. GetInfo
// reports the agent SVID chain and the cache; `logger set -level debug`
// makes the agent write DEBUG lines and `logger reset` stops them.
func TestAgentAdminSocket(t *testing.T) {
	s := startServer(t, "")
	token := s.token(t, "spiffe://example.org/node")
	s.createEntry(t, "-parentID", "spiffe://example.org/node", "-spiffeID", "spiffe://example.org/admin-workload", "-selector", uidSelector)
	started := time.Now()
	a := startAdminAgent(t, s, token)
	if fi, err := os.Lstat(a.adminSocket); err != nil || fi.Mode() != fs.ModeSocket|0o770 {
		t.Fatalf("admin socket: %v %v, want srwxrwx---", fi.Mode(), err)
	}

	// The agent caches X.509-SVIDs for the node alias entry and the
	// workload's, and a JWT-SVID once the workload asks.
	c := newClient(t, a.agentEnv)
	fetchX509(t, c, "spiffe://example.org/admin-workload")
	ctx := context.Background()
	if _, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}); err != nil {
		t.Fatal(err)
	}
	debug := debugv1.NewDebugClient(dialUnix(t, a.adminSocket))
	info, err := debug.GetInfo(ctx, &debugv1.GetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(info.SvidChain); n < 2 {
		t.Fatalf("agent SVID chain of %d certificates, want leaf to root", n)
	}
	leaf, root := info.SvidChain[0], info.SvidChain[len(info.SvidChain)-1]
	if leaf.Id.GetTrustDomain() != "example.org" || leaf.Id.GetPath() != "/spire/agent/join_token/"+token || leaf.ExpiresAt <= time.Now().Unix() {
		t.Fatalf("agent SVID %v", leaf)
	}
	if root.Subject == "" || root.ExpiresAt < leaf.ExpiresAt {
		t.Fatalf("root %v", root)
	}
	now := time.Now()
	if info.CachedX509SvidsCount != 2 || info.CachedJwtSvidsCount != 1 || info.CachedSvidstoreX509SvidsCount != 0 ||
		info.Uptime < 0 || int64(info.Uptime) > int64(now.Sub(started).Seconds())+1 ||
		info.LastSyncSuccess < started.Unix() || info.LastSyncSuccess > now.Unix() {
		t.Fatalf("GetInfo = %v", info)
	}

	// The Workload API socket serves neither admin service.
	wl := dialUnix(t, a.socket)
	if _, err := debugv1.NewDebugClient(wl).GetInfo(ctx, &debugv1.GetInfoRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetInfo on the Workload API socket: %v", err)
	}
	if _, err := loggerv1.NewLoggerClient(wl).SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: 5}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("SetLogLevel on the Workload API socket: %v", err)
	}

	// Every admin call has a DEBUG line, written before its answer; a
	// GetLogger after it (an INFO line) shows whether it was written.
	const debugLine = `level=DEBUG msg="Admin API call" subsystem=admin_api method=/spire.agent.debug.v1.Debug/GetInfo`
	// callAndMark makes a GetInfo call, then a `logger get`, which must
	// say level, and waits for its INFO line, the marks-th.
	callAndMark := func(marks int, level string) {
		t.Helper()
		if _, err := debug.GetInfo(ctx, &debugv1.GetInfoRequest{}); err != nil {
			t.Fatal(err)
		}
		if out, want := a.logger(t, "get"), "Logger Level : "+level+"\nLaunch Level : info\n\n"; out != want {
			t.Fatalf("logger get: %q, want %q", out, want)
		}
		eventually(t, 10*time.Second, "the GetLogger line", func() error {
			if strings.Count(a.proc.out.String(), `msg="GetLogger Called"`) < marks {
				return errString("not yet")
			}
			return nil
		})
	}
	callAndMark(1, "info")
	if strings.Contains(a.proc.out.String(), debugLine) {
		t.Fatalf("DEBUG line at launch level INFO")
	}
	if out := a.logger(t, "set", "-level", "debug"); out != "Logger Level : debug\nLaunch Level : info\n\n" {
		t.Fatalf("logger set: %q", out)
	}
	callAndMark(2, "debug")
	if n := strings.Count(a.proc.out.String(), debugLine); n != 1 {
		t.Fatalf("%d DEBUG lines for one GetInfo after logger set -level debug", n)
	}
	if !strings.Contains(a.proc.out.String(), "caller_uid="+strconv.Itoa(os.Getuid())) {
		t.Fatal("the DEBUG line does not name the caller")
	}
	if out := a.logger(t, "reset", "-output", "json"); out != `{"current_level":"INFO","launch_level":"INFO"}`+"\n" {
		t.Fatalf("logger reset: %q", out)
	}
	callAndMark(3, "info")
	if n := strings.Count(a.proc.out.String(), debugLine); n != 1 {
		t.Fatalf("DEBUG lines still written after logger reset (%d)", n)
	}
}

// TestAgentAdminSocketFlood: another uid in the socket's group opens more
// connections than its cap and holds them; the extra ones are refused and
// logged, and root's logger and debug calls are still answered.
func TestAgentAdminSocketFlood(t *testing.T) {
	simtest.RequireRoot(t)
	const nobody, flooders = 65534, admin.DefaultMaxConnectionsPerUID + 24
	s := startServer(t, "")
	a := startAdminAgent(t, s, s.token(t, ""))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wltest.CopyForOthers(t, a.adminDir), "-test.run=^$")
	cmd.Env = append(os.Environ(), adminFloodEnv+"="+strconv.Itoa(flooders), adminSocketEnv+"="+a.adminSocket)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Group 0 may use the socket (0770, root's group); uid nobody is
		// a peer of its own for the per-uid cap.
		Credential: &syscall.Credential{Uid: nobody, Gid: 0},
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
	if held != admin.DefaultMaxConnectionsPerUID || refused != flooders-held {
		t.Fatalf("flooder kept %d and was refused %d, want %d and %d", held, refused, admin.DefaultMaxConnectionsPerUID, flooders-admin.DefaultMaxConnectionsPerUID)
	}

	// Root is served while nobody sits at its cap.
	if out := a.logger(t, "get"); out != "Logger Level : info\nLaunch Level : info\n\n" {
		t.Fatalf("logger get during the flood: %q", out)
	}
	if _, err := debugv1.NewDebugClient(dialUnix(t, a.adminSocket)).GetInfo(ctx, &debugv1.GetInfoRequest{}); err != nil {
		t.Fatalf("GetInfo during the flood: %v", err)
	}
	logs := a.proc.out.String()
	if !strings.Contains(logs, `msg="Refused connection" subsystem=admin_api listener="admin API" reason="per-peer connection limit reached" uid=65534`) {
		t.Fatalf("no refusal line naming the admin API and the uid:\n%s", logs)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("flooder: %v; stderr:\n%s", err, stderr.String())
	}
}
