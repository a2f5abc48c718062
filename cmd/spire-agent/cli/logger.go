package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/spiffe-hw/spire-hw/logging/loggerapi"
)

// DefaultAdminSocketPath is SPIRE's default agent admin socket, where the
// admin commands look unless told otherwise (admin_socket_path has no
// default: the agent serves no admin socket unless it is set).
const DefaultAdminSocketPath = "/tmp/spire-agent/private/admin.sock"

// loggerCommand is one of `logger get|set|reset`, which speak logger/v1 on
// the admin socket with the flags and output of spire-server's commands
// of the same names.
type loggerCommand struct {
	synopsis string
	// call makes the command's request; level is -level, for set.
	call func(ctx context.Context, c loggerv1.LoggerClient, level types.LogLevel) (*types.Logger, error)
	// failure prefixes a failed call's error, in SPIRE's words.
	failure   string
	withLevel bool
}

var loggerCommands = map[string]loggerCommand{
	"logger get": {synopsis: "Gets the logger details", failure: "error fetching logger",
		call: func(ctx context.Context, c loggerv1.LoggerClient, _ types.LogLevel) (*types.Logger, error) {
			return c.GetLogger(ctx, &loggerv1.GetLoggerRequest{})
		}},
	"logger set": {synopsis: "Sets the logger details", failure: "failed to set log level", withLevel: true,
		call: func(ctx context.Context, c loggerv1.LoggerClient, level types.LogLevel) (*types.Logger, error) {
			return c.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: level})
		}},
	"logger reset": {synopsis: "Reset the logger details to launch level", failure: "failed to reset logger",
		call: func(ctx context.Context, c loggerv1.LoggerClient, _ types.LogLevel) (*types.Logger, error) {
			return c.ResetLogLevel(ctx, &loggerv1.ResetLogLevelRequest{})
		}},
}

func (e *env) logger(name string, lc loggerCommand) func(args []string) error {
	return func(args []string) error {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(e.stderr)
		socketPath := fs.String("socketPath", DefaultAdminSocketPath, "Path to the SPIRE Agent admin API socket")
		var levelName string
		if lc.withLevel {
			fs.StringVar(&levelName, "level", "", "The new log level, one of (panic, fatal, error, warn, info, debug, trace)")
		}
		output := outputPretty
		fs.Var(&output, "output", "Desired output format (pretty, json); default: pretty.")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			// A stray word is almost always a mistyped flag.
			fmt.Fprintf(e.stderr, "unexpected argument %q\n", fs.Arg(0))
			fs.Usage()
			return errReported
		}
		fail := func(err error) error {
			fmt.Fprintf(e.stderr, "Error: %v\n", err)
			return errReported
		}
		var level types.LogLevel
		if lc.withLevel {
			var ok bool
			if levelName == "" {
				return fail(errors.New("a value (-level) must be set"))
			}
			if level, ok = loggerapi.ParseName(levelName); !ok {
				return fail(fmt.Errorf("the value %q is not a valid setting", levelName))
			}
		}
		// A "unix://" target reads a relative path as an authority.
		abs, err := filepath.Abs(*socketPath)
		if err != nil {
			return fail(fmt.Errorf("socket path %q: %w", *socketPath, err))
		}
		conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fail(fmt.Errorf("dial %s: %w", abs, err))
		}
		defer conn.Close()
		l, err := lc.call(e.ctx, loggerv1.NewLoggerClient(conn), level)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", lc.failure, err))
		}
		if err := e.printLogger(output, l); err != nil {
			return fail(err)
		}
		return nil
	}
}

// printLogger prints as spire-server's logger commands do.
func (e *env) printLogger(out outputFormat, l *types.Logger) error {
	if out == outputJSON {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(l)
		if err != nil {
			return fmt.Errorf("marshal json: %w", err)
		}
		// protojson varies its spacing on purpose; SPIRE prints compact.
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return fmt.Errorf("marshal json: %w", err)
		}
		e.printf("%s\n", buf.Bytes())
		return nil
	}
	current, ok := loggerapi.Name(l.CurrentLevel)
	if !ok {
		return errors.New("internal error: returned current log level is undefined; please report this as a bug")
	}
	launch, ok := loggerapi.Name(l.LaunchLevel)
	if !ok {
		return errors.New("internal error: returned launch log level is undefined; please report this as a bug")
	}
	e.printf("Logger Level : %s\nLaunch Level : %s\n\n", current, launch)
	return nil
}

// outputFormat is -output as spire-server's admin commands take it.
type outputFormat int

const (
	outputPretty outputFormat = iota
	outputJSON
)

func (o *outputFormat) String() string {
	if *o == outputJSON {
		return "json"
	}
	return "pretty"
}

func (o *outputFormat) Set(v string) error {
	switch strings.ToLower(v) {
	case "pretty":
		*o = outputPretty
	case "json":
		*o = outputJSON
	default:
		return fmt.Errorf("bad formatter flag: unknown format %q; use pretty or json", v)
	}
	return nil
}
