// Package cli is the spire-agent command line: `run` (delegated to the
// caller), and the workload-facing commands `api fetch x509|jwt`,
// `api validate jwt`, `api watch` and `healthcheck`, with SPIRE's command
// names, flags and output so that scripts written for SPIRE keep working.
// The workload commands talk to the agent through the go-spiffe Workload API
// client, exactly as a workload would.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// DefaultSocketPath is SPIRE's default Workload API socket.
const DefaultSocketPath = "/tmp/spire-agent/public/api.sock"

const usage = `Usage: spire-agent <command> [flags]

Commands:
    run                 Runs the agent
    api fetch [x509]    Fetches X509 SVIDs from the Workload API
    api fetch jwt       Fetches a JWT SVID from the Workload API
    api validate jwt    Validates a JWT SVID
    api watch           Attaches to the Workload API and prints updates as they're received
    healthcheck         Determines agent health status
`

// Main runs the command in args (without the program name) and returns the
// process exit code. run is called for `spire-agent run ...`.
func Main(args []string, run func(args []string) int, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mainContext(ctx, args, run, stdout, stderr)
}

// mainContext is Main with the context that `api watch` stops on.
func mainContext(ctx context.Context, args []string, run func([]string) int, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	name, rest := splitCommand(args)
	var cmd func([]string) error
	switch name {
	case "run":
		if run == nil {
			fmt.Fprintln(stderr, "run: not available in this build")
			return 1
		}
		return run(rest)
	case "api fetch", "api fetch x509":
		cmd = e.fetchX509
	case "api fetch jwt":
		cmd = e.fetchJWT
	case "api validate jwt":
		cmd = e.validateJWT
	case "api watch":
		cmd = e.watch
	case "healthcheck":
		cmd = e.healthcheck
	case "", "help", "-h", "--help", "-help":
		fmt.Fprint(stderr, usage)
		if name == "" {
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", strings.Join(args, " "), usage)
		return 1
	}
	if err := cmd(rest); err != nil {
		if !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errReported) {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	return 0
}

// splitCommand takes the longest known command name from the front of args.
func splitCommand(args []string) (string, []string) {
	known := []string{"api fetch x509", "api fetch jwt", "api validate jwt", "api fetch", "api watch", "healthcheck", "run"}
	for _, k := range known {
		words := strings.Fields(k)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == k {
			return k, args[len(words):]
		}
	}
	if len(args) == 0 {
		return "", nil
	}
	return strings.Join(args, " "), nil
}

// errReported marks an error whose message has already been printed.
var errReported = errors.New("cli: reported")

type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
}

func (e *env) printf(format string, a ...any) { fmt.Fprintf(e.stdout, format, a...) }

// common holds the flags every api command shares.
type common struct {
	socketPath string
	timeout    time.Duration
	output     string
}

func (e *env) flagSet(name string, c *common, withOutput bool) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&c.socketPath, "socketPath", DefaultSocketPath, "Path to the SPIRE Agent API Unix domain socket")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "Time to wait for a response")
	if withOutput {
		fs.StringVar(&c.output, "output", "pretty", "Desired output format (pretty, json)")
	}
	return fs
}

func (c *common) check() error {
	if c.output != "" && c.output != "pretty" && c.output != "json" {
		return fmt.Errorf("invalid -output %q: use pretty or json", c.output)
	}
	return nil
}

// client connects the go-spiffe Workload API client to the socket.
func (e *env) client(c *common) (*workloadapi.Client, error) {
	cl, err := workloadapi.New(e.ctx, workloadapi.WithAddr("unix://"+c.socketPath))
	if err != nil {
		return nil, fmt.Errorf("unable to connect to the Workload API at %s: %w", c.socketPath, err)
	}
	return cl, nil
}

// rawClient is the generated Workload API client, for commands that print
// the agent's answers as sent; close releases its connection.
func (e *env) rawClient(c *common) (cl workload.SpiffeWorkloadAPIClient, closeConn func(), err error) {
	conn, err := grpc.NewClient("unix://"+c.socketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("unable to connect to the Workload API at %s: %w", c.socketPath, err)
	}
	return workload.NewSpiffeWorkloadAPIClient(conn), func() { conn.Close() }, nil
}

// workloadHeader marks a call as a Workload API call; agents refuse calls
// without it (a guard against SSRF-style proxies).
func workloadHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func (e *env) withTimeout(c *common) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		return context.WithTimeout(e.ctx, c.timeout)
	}
	return context.WithCancel(e.ctx)
}
