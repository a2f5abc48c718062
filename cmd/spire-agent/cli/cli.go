// Package cli is the spire-agent command line: `run` (delegated to the
// caller), `validate`, the workload-facing commands `api fetch x509|jwt`,
// `api validate jwt`, `api watch` and `healthcheck`, and `logger
// get|set|reset` on the admin socket, with SPIRE's command names, flags and
// output so that scripts written for SPIRE keep working. The workload
// commands talk to the agent through the go-spiffe Workload API client,
// exactly as a workload would.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/spiffe-hw/spire-hw/internal/clitree"
	"github.com/spiffe-hw/spire-hw/internal/version"
)

// DefaultSocketPath is SPIRE's default Workload API socket.
const DefaultSocketPath = "/tmp/spire-agent/public/api.sock"

// Main runs the command in args (without the program name) and returns the
// process exit code. run is called for `spire-agent run ...`.
func Main(args []string, run func(args []string) int, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mainContext(ctx, args, run, stdout, stderr)
}

// mainContext is Main with the context that `api watch` stops on. It
// dispatches as SPIRE's CLI (mitchellh/cli) does: help, usage and version
// on stderr, 127 for an unknown command, "api" and "api validate" made up
// as parents that list their subcommands.
func mainContext(ctx context.Context, args []string, run func([]string) int, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	leaf := func(synopsis string, run func([]string) error, help bool) clitree.Factory {
		return func() clitree.Command {
			return &leafCommand{synopsis: synopsis, run: run, helpText: help, stderr: stderr}
		}
	}
	fetchX509 := leaf("Fetches X509 SVIDs from the Workload API", e.fetchX509, false)
	cmds := map[string]clitree.Factory{
		"api fetch":        fetchX509,
		"api fetch x509":   fetchX509,
		"api fetch jwt":    leaf("Fetches a JWT SVID from the Workload API", e.fetchJWT, false),
		"api validate jwt": leaf("Validates a JWT SVID", e.validateJWT, false),
		// SPIRE's watch (alone among the api commands) returns the flag
		// error as its help text.
		"api watch":   leaf("Attaches to the Workload API and prints updates as they're received", e.watch, true),
		"healthcheck": leaf("Determines agent health status", e.healthcheck, false),
		"run": func() clitree.Command {
			return &daemonCommand{name: "run", synopsis: "Runs the agent", run: run, stderr: stderr}
		},
		"validate": func() clitree.Command { return &validateCommand{e: e} },
	}
	for name, lc := range loggerCommands {
		// As spire-server's admin commands, help ends with the flag
		// package's "flag: help requested".
		cmds[name] = leaf(lc.synopsis, e.logger(name, lc), true)
	}
	c := clitree.CLI{Name: "spire-agent", Version: version.Version(), Commands: cmds, Stderr: stderr}
	return c.Run(args)
}

// leafCommand is a workload-facing command of the tree.
type leafCommand struct {
	synopsis string
	run      func(args []string) error
	// helpText: Help returns "flag: help requested" rather than "".
	helpText bool
	stderr   io.Writer
}

func (l *leafCommand) Synopsis() string { return l.synopsis }

// Help prints the flag usage; SPIRE's agent commands return no text of
// their own after it.
func (l *leafCommand) Help() string {
	err := l.run([]string{"-h"})
	if l.helpText && err != nil {
		return err.Error()
	}
	return ""
}

func (l *leafCommand) Run(args []string) int {
	if err := l.run(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errReported) {
			fmt.Fprintln(l.stderr, err)
		}
		return 1
	}
	return 0
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
