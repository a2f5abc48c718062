// Package cli implements the spire-server command line except "run": the
// admin commands (entry, agent, token, bundle, federation, logger, x509 mint,
// jwt mint, healthcheck) that speak SPIRE's server API over the admin Unix socket, and
// validate, which checks a configuration with run's own loader.
//
// Commands, flag names (single dash, camelCase), human output and
// "-output json" follow SPIRE's CLI so that existing scripts and tutorials work
// unchanged. Each command builds its request from flags in one function and
// prints the response in another; the gRPC call sits between them, so both
// halves are testable without a server.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spiffe-hw/spire-hw/internal/clitree"
	"github.com/spiffe-hw/spire-hw/internal/version"
)

// DefaultSocketPath is where SPIRE's server listens for admin API calls.
const DefaultSocketPath = "/tmp/spire-server/private/api.sock"

// env is where a command reads input and writes output; tests swap it.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func (e *env) printf(format string, args ...any) {
	fmt.Fprintf(e.stdout, format, args...)
}

func (e *env) errPrintf(format string, args ...any) {
	fmt.Fprintf(e.stderr, format, args...)
}

// clients holds the one connection to the server and hands out API clients.
type clients struct {
	conn *grpc.ClientConn
}

func (c *clients) agent() agentv1.AgentClient    { return agentv1.NewAgentClient(c.conn) }
func (c *clients) bundle() bundlev1.BundleClient { return bundlev1.NewBundleClient(c.conn) }
func (c *clients) entry() entryv1.EntryClient    { return entryv1.NewEntryClient(c.conn) }
func (c *clients) logger() loggerv1.LoggerClient { return loggerv1.NewLoggerClient(c.conn) }
func (c *clients) svid() svidv1.SVIDClient       { return svidv1.NewSVIDClient(c.conn) }
func (c *clients) health() grpc_health_v1.HealthClient {
	return grpc_health_v1.NewHealthClient(c.conn)
}

// dial connects to the admin socket. The socket's file permissions are the
// authentication, so the transport carries no TLS. The path is made absolute
// because a "unix://" target reads a relative path as an authority.
func dial(socketPath string) (*clients, error) {
	abs, err := filepath.Abs(socketPath)
	if err != nil {
		return nil, fmt.Errorf("cli: socket path %q: %w", socketPath, err)
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("cli: dial %s: %w", abs, err)
	}
	return &clients{conn: conn}, nil
}

// command is one leaf of the command tree, e.g. "entry create".
type command interface {
	synopsis() string
	appendFlags(fs *flag.FlagSet)
	run(ctx context.Context, e *env, c *clients) error
}

// commandFactories lists every command by its full name. A fresh command is
// made per invocation so flag state never leaks between runs.
var commandFactories = map[string]func() command{
	"agent ban":          func() command { return &agentBanCommand{} },
	"agent count":        func() command { return &agentCountCommand{} },
	"agent evict":        func() command { return &agentEvictCommand{} },
	"agent list":         func() command { return &agentListCommand{} },
	"agent purge":        func() command { return &agentPurgeCommand{} },
	"agent show":         func() command { return &agentShowCommand{} },
	"bundle count":       func() command { return &bundleCountCommand{} },
	"bundle delete":      func() command { return &bundleDeleteCommand{} },
	"bundle list":        func() command { return &bundleListCommand{} },
	"bundle set":         func() command { return &bundleSetCommand{} },
	"bundle show":        func() command { return &bundleShowCommand{} },
	"entry count":        func() command { return &entryCountCommand{} },
	"entry create":       func() command { return &entryCreateCommand{} },
	"entry delete":       func() command { return &entryDeleteCommand{} },
	"entry show":         func() command { return &entryShowCommand{} },
	"entry update":       func() command { return &entryUpdateCommand{} },
	"federation create":  func() command { return &federationCreateCommand{} },
	"federation delete":  func() command { return &federationDeleteCommand{} },
	"federation list":    func() command { return &federationListCommand{} },
	"federation refresh": func() command { return &federationRefreshCommand{} },
	"federation show":    func() command { return &federationShowCommand{} },
	"federation update":  func() command { return &federationUpdateCommand{} },
	"healthcheck":        func() command { return &healthcheckCommand{} },
	"jwt mint":           func() command { return &jwtMintCommand{} },
	"logger get":         func() command { return &loggerGetCommand{} },
	"logger reset":       func() command { return &loggerResetCommand{} },
	"logger set":         func() command { return &loggerSetCommand{} },
	"token generate": func() command {
		return &tokenGenerateCommand{}
	},
	"x509 mint": func() command { return &x509MintCommand{} },
}

// Main runs the spire-server command line with args (without the program
// name) and returns the process exit code. The "run" command is handed to run
// so the CLI does not depend on the server itself.
func Main(args []string, run func(args []string) int, stdout, stderr io.Writer) int {
	e := &env{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	return mainWithEnv(args, run, e)
}

// mainWithEnv dispatches as SPIRE's CLI (mitchellh/cli) does: help, usage
// and version on stderr, 127 for an unknown command.
func mainWithEnv(args []string, run func(args []string) int, e *env) int {
	cmds := map[string]clitree.Factory{
		"run": func() clitree.Command {
			return &daemonCommand{name: "run", synopsis: "Runs the server", run: run, stderr: e.stderr}
		},
		"validate": func() clitree.Command { return &validateCommand{e: e} },
	}
	for name, factory := range commandFactories {
		cmds[name] = func() clitree.Command { return &adapter{name: name, cmd: factory(), e: e} }
	}
	c := clitree.CLI{Name: "spire-server", Version: version.Version(), Commands: cmds, Stderr: e.stderr}
	return c.Run(args)
}

// adapter makes a command a node of the command tree, as SPIRE's
// util.AdaptCommand does.
type adapter struct {
	name string
	cmd  command
	e    *env
}

func (a *adapter) Synopsis() string      { return a.cmd.synopsis() }
func (a *adapter) Run(args []string) int { return runCommand(a.name, a.cmd, args, a.e) }

// Help prints the flag usage and returns "flag: help requested", which the
// tree prints after it, as SPIRE's adapter does.
func (a *adapter) Help() string {
	_, err := parseFlags(a.name, a.cmd, []string{"-h"}, a.e.stderr)
	return err.Error()
}

// parseFlags builds the flag set of the named command, parses args into cmd
// and returns the socket path. It is shared by runCommand and the tests.
func parseFlags(name string, cmd command, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socketPath := fs.String("socketPath", DefaultSocketPath, "Path to the SPIRE Server API socket")
	cmd.appendFlags(fs)
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		// The flag package stops at the first non-flag; a stray word is
		// almost always a mistyped flag, so refuse it rather than ignore it.
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return "", err
	}
	return *socketPath, nil
}

// runCommand parses flags, connects and runs cmd, printing errors the way
// SPIRE does ("Error: ..." on stderr, exit code 1).
func runCommand(name string, cmd command, args []string, e *env) int {
	socketPath, err := parseFlags(name, cmd, args, e.stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 1
	}
	if hc, ok := cmd.(*healthcheckCommand); ok {
		// healthcheck reports its own failures in SPIRE's wording.
		return hc.runHealthcheck(context.Background(), e, socketPath)
	}
	c, err := dial(socketPath)
	if err != nil {
		e.errPrintf("Error: %v\n", err)
		return 1
	}
	defer c.conn.Close()
	if err := cmd.run(context.Background(), e, c); err != nil {
		e.errPrintf("Error: %v\n", err)
		return 1
	}
	return 0
}
