package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
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

// logLevels are the names SPIRE's -level accepts (logrus.ParseLevel).
var logLevels = map[string]types.LogLevel{
	"panic": types.LogLevel_PANIC, "fatal": types.LogLevel_FATAL, "error": types.LogLevel_ERROR,
	"warn": types.LogLevel_WARN, "warning": types.LogLevel_WARN, "info": types.LogLevel_INFO,
	"debug": types.LogLevel_DEBUG, "trace": types.LogLevel_TRACE,
}

func (c *loggerSetCommand) buildRequest() (*loggerv1.SetLogLevelRequest, error) {
	if c.level == "" {
		return nil, errors.New("a value (-level) must be set")
	}
	level, ok := logLevels[strings.ToLower(c.level)]
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

// levelNames are logrus's names, which SPIRE prints ("warning", not "warn").
var levelNames = map[types.LogLevel]string{
	types.LogLevel_PANIC: "panic", types.LogLevel_FATAL: "fatal", types.LogLevel_ERROR: "error",
	types.LogLevel_WARN: "warning", types.LogLevel_INFO: "info", types.LogLevel_DEBUG: "debug",
	types.LogLevel_TRACE: "trace",
}

func printLogger(e *env, out outputFormat, l *types.Logger) error {
	if out == outputJSON {
		return printProtoJSON(e.stdout, l)
	}
	current, ok := levelNames[l.CurrentLevel]
	if !ok {
		return errors.New("internal error: returned current log level is undefined; please report this as a bug")
	}
	launch, ok := levelNames[l.LaunchLevel]
	if !ok {
		return errors.New("internal error: returned launch log level is undefined; please report this as a bug")
	}
	e.printf("Logger Level : %s\nLaunch Level : %s\n\n", current, launch)
	return nil
}
