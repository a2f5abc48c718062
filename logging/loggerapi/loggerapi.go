// Package loggerapi is SPIRE's logger/v1 over a daemon's live
// logging.Level, written once for both daemons: the server serves it as
// spire.api.server.logger.v1 and the agent as spire.api.agent.logger.v1,
// two generated services with the same requests and the same answer
// (spire.api.types.Logger). Each daemon's service is a thin shell over
// Service; the CLIs name levels with Name and ParseName.
//
// SPIRE's levels are logrus's. slog has no trace, fatal or panic, so they
// sit beyond debug and error, where slog leaves room for them.
package loggerapi

import (
	"log/slog"
	"strings"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/logging"
)

// The slog levels of SPIRE's levels that slog lacks.
const (
	LevelTrace = slog.LevelDebug - 4
	LevelFatal = slog.LevelError + 4
	LevelPanic = slog.LevelError + 8
)

var slogLevels = map[types.LogLevel]slog.Level{
	types.LogLevel_TRACE: LevelTrace,
	types.LogLevel_DEBUG: slog.LevelDebug,
	types.LogLevel_INFO:  slog.LevelInfo,
	types.LogLevel_WARN:  slog.LevelWarn,
	types.LogLevel_ERROR: slog.LevelError,
	types.LogLevel_FATAL: LevelFatal,
	types.LogLevel_PANIC: LevelPanic,
}

// SlogLevel is the slog level that shows what SPIRE's level l shows; false
// for UNSPECIFIED and values the API does not define.
func SlogLevel(l types.LogLevel) (slog.Level, bool) {
	v, ok := slogLevels[l]
	return v, ok
}

// APILevel names a slog level by the SPIRE level that shows the same lines.
func APILevel(l slog.Level) types.LogLevel {
	switch {
	case l <= LevelTrace:
		return types.LogLevel_TRACE
	case l <= slog.LevelDebug:
		return types.LogLevel_DEBUG
	case l <= slog.LevelInfo:
		return types.LogLevel_INFO
	case l <= slog.LevelWarn:
		return types.LogLevel_WARN
	case l <= slog.LevelError:
		return types.LogLevel_ERROR
	case l <= LevelFatal:
		return types.LogLevel_FATAL
	}
	return types.LogLevel_PANIC
}

// names are logrus's, which SPIRE logs and prints ("warning", not "warn").
var names = map[types.LogLevel]string{
	types.LogLevel_TRACE: "trace", types.LogLevel_DEBUG: "debug", types.LogLevel_INFO: "info",
	types.LogLevel_WARN: "warning", types.LogLevel_ERROR: "error", types.LogLevel_FATAL: "fatal",
	types.LogLevel_PANIC: "panic",
}

// Name is the name SPIRE logs and prints for l; false for UNSPECIFIED and
// undefined values.
func Name(l types.LogLevel) (string, bool) {
	n, ok := names[l]
	return n, ok
}

// parseNames are the names logrus.ParseLevel accepts, which SPIRE's
// `logger set -level` takes.
var parseNames = map[string]types.LogLevel{
	"panic": types.LogLevel_PANIC, "fatal": types.LogLevel_FATAL, "error": types.LogLevel_ERROR,
	"warn": types.LogLevel_WARN, "warning": types.LogLevel_WARN, "info": types.LogLevel_INFO,
	"debug": types.LogLevel_DEBUG, "trace": types.LogLevel_TRACE,
}

// ParseName reads a level name as SPIRE's CLI does, in any case.
func ParseName(s string) (types.LogLevel, bool) {
	l, ok := parseNames[strings.ToLower(s)]
	return l, ok
}

// Service is logger/v1's behaviour: what GetLogger, SetLogLevel and
// ResetLogLevel answer and log, the generated request types aside.
type Service struct {
	// Level is the daemon's live level; nil makes every call fail with
	// FailedPrecondition (a logger that cannot change level).
	Level *logging.Level
	// Log gets SPIRE's line for each call.
	Log *slog.Logger
	// Daemon names the daemon in errors ("server", "agent").
	Daemon string
}

func (s *Service) logger() (*types.Logger, error) {
	if s.Level == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the %s's logger has no adjustable level", s.Daemon)
	}
	return &types.Logger{CurrentLevel: APILevel(s.Level.Level()), LaunchLevel: APILevel(s.Level.Launch())}, nil
}

// Get implements GetLogger.
func (s *Service) Get() (*types.Logger, error) {
	s.Log.Info("GetLogger Called")
	return s.logger()
}

// Set implements SetLogLevel: every logger derived from the daemon's
// follows at once.
func (s *Service) Set(newLevel types.LogLevel) (*types.Logger, error) {
	if newLevel == types.LogLevel_UNSPECIFIED {
		s.Log.Warn("Invalid argument: newLevel value cannot be LogLevel_UNSPECIFIED")
		return nil, status.Error(codes.InvalidArgument, "newLevel value cannot be LogLevel_UNSPECIFIED")
	}
	level, ok := SlogLevel(newLevel)
	if !ok {
		s.Log.Warn("Invalid argument: unsupported log level", "new_log_level", newLevel.String())
		return nil, status.Error(codes.InvalidArgument, "unsupported log level")
	}
	if _, err := s.logger(); err != nil {
		return nil, err
	}
	name, _ := Name(newLevel)
	s.Log.Info("SetLogLevel Called", "new_log_level", name)
	s.Level.Set(level)
	return s.logger()
}

// Reset implements ResetLogLevel: back to the configured log_level.
func (s *Service) Reset() (*types.Logger, error) {
	if _, err := s.logger(); err != nil {
		return nil, err
	}
	name, _ := Name(APILevel(s.Level.Launch()))
	s.Log.Info("ResetLogLevel Called", "launch_log_level", name)
	s.Level.Reset()
	return s.logger()
}
