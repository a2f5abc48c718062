package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/logging/loggerapi"
)

// loggerGetCommand is "logger get".
type loggerGetCommand struct {
	out outputFormat
}

func (*loggerGetCommand) synopsis() string               { return "Gets the logger details" }
func (c *loggerGetCommand) appendFlags(fs *flag.FlagSet) { addOutputFlag(fs, &c.out) }

func (c *loggerGetCommand) run(ctx context.Context, e *env, cl *clients) error {
	l, err := cl.logger().GetLogger(ctx, &loggerv1.GetLoggerRequest{})
	if err != nil {
		return fmt.Errorf("error fetching logger: %w", err)
	}
	return printLogger(e, c.out, l)
}

// loggerSetCommand is "logger set -level".
type loggerSetCommand struct {
	level string
	out   outputFormat
}

func (*loggerSetCommand) synopsis() string { return "Sets the logger details" }

func (c *loggerSetCommand) appendFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.level, "level", "", "The new log level, one of (panic, fatal, error, warn, info, debug, trace)")
	addOutputFlag(fs, &c.out)
}

func (c *loggerSetCommand) buildRequest() (*loggerv1.SetLogLevelRequest, error) {
	if c.level == "" {
		return nil, errors.New("a value (-level) must be set")
	}
	level, ok := loggerapi.ParseName(c.level)
	if !ok {
		return nil, fmt.Errorf("the value %q is not a valid setting", c.level)
	}
	return &loggerv1.SetLogLevelRequest{NewLevel: level}, nil
}

func (c *loggerSetCommand) run(ctx context.Context, e *env, cl *clients) error {
	req, err := c.buildRequest()
	if err != nil {
		return err
	}
	l, err := cl.logger().SetLogLevel(ctx, req)
	if err != nil {
		return fmt.Errorf("failed to set log level: %w", err)
	}
	return printLogger(e, c.out, l)
}

// loggerResetCommand is "logger reset": back to the configured level.
type loggerResetCommand struct {
	out outputFormat
}

func (*loggerResetCommand) synopsis() string               { return "Reset the logger details to launch level" }
func (c *loggerResetCommand) appendFlags(fs *flag.FlagSet) { addOutputFlag(fs, &c.out) }

func (c *loggerResetCommand) run(ctx context.Context, e *env, cl *clients) error {
	l, err := cl.logger().ResetLogLevel(ctx, &loggerv1.ResetLogLevelRequest{})
	if err != nil {
		return fmt.Errorf("failed to reset logger: %w", err)
	}
	return printLogger(e, c.out, l)
}

func printLogger(e *env, out outputFormat, l *types.Logger) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, l)
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
