package api

import (
	"context"
	"log/slog"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LoggerService implements logger/v1: it reads and changes the server's
// log level while it runs (`spire-server logger get|set|reset`), so that an
// operator can turn on debug logs during an incident without a restart.
// Only the admin socket may call it, as in SPIRE.
type LoggerService struct {
	loggerv1.UnimplementedLoggerServer
	api *API
}

// SPIRE's log levels are logrus's; slog has no trace, fatal or panic, so
// they sit beyond debug and error, where slog leaves room for them.
const (
	levelTrace = slog.LevelDebug - 4
	levelFatal = slog.LevelError + 4
	levelPanic = slog.LevelError + 8
)

var slogLevel = map[types.LogLevel]slog.Level{
	types.LogLevel_TRACE: levelTrace,
	types.LogLevel_DEBUG: slog.LevelDebug,
	types.LogLevel_INFO:  slog.LevelInfo,
	types.LogLevel_WARN:  slog.LevelWarn,
	types.LogLevel_ERROR: slog.LevelError,
	types.LogLevel_FATAL: levelFatal,
	types.LogLevel_PANIC: levelPanic,
}

// apiLevel names a slog level by the SPIRE level that shows the same lines.
func apiLevel(l slog.Level) types.LogLevel {
	switch {
	case l <= levelTrace:
		return types.LogLevel_TRACE
	case l <= slog.LevelDebug:
		return types.LogLevel_DEBUG
	case l <= slog.LevelInfo:
		return types.LogLevel_INFO
	case l <= slog.LevelWarn:
		return types.LogLevel_WARN
	case l <= slog.LevelError:
		return types.LogLevel_ERROR
	case l <= levelFatal:
		return types.LogLevel_FATAL
	}
	return types.LogLevel_PANIC
}

// logrusName is the name SPIRE logs and prints for a level.
var logrusName = map[types.LogLevel]string{
	types.LogLevel_TRACE: "trace", types.LogLevel_DEBUG: "debug", types.LogLevel_INFO: "info",
	types.LogLevel_WARN: "warning", types.LogLevel_ERROR: "error", types.LogLevel_FATAL: "fatal",
	types.LogLevel_PANIC: "panic",
}

func (s *LoggerService) logger() (*types.Logger, error) {
	lv := s.api.cfg.LogLevel
	if lv == nil {
		return nil, status.Error(codes.FailedPrecondition, "the server's logger has no adjustable level")
	}
	return &types.Logger{CurrentLevel: apiLevel(lv.Level()), LaunchLevel: apiLevel(lv.Launch())}, nil
}

// GetLogger implements logger/v1.
func (s *LoggerService) GetLogger(context.Context, *loggerv1.GetLoggerRequest) (*types.Logger, error) {
	s.api.cfg.Log.Info("GetLogger Called")
	return s.logger()
}

// SetLogLevel implements logger/v1.
func (s *LoggerService) SetLogLevel(_ context.Context, req *loggerv1.SetLogLevelRequest) (*types.Logger, error) {
	if req.NewLevel == types.LogLevel_UNSPECIFIED {
		s.api.cfg.Log.Warn("Invalid argument: newLevel value cannot be LogLevel_UNSPECIFIED")
		return nil, status.Error(codes.InvalidArgument, "newLevel value cannot be LogLevel_UNSPECIFIED")
	}
	level, ok := slogLevel[req.NewLevel]
	if !ok {
		s.api.cfg.Log.Warn("Invalid argument: unsupported log level", "new_log_level", req.NewLevel.String())
		return nil, status.Error(codes.InvalidArgument, "unsupported log level")
	}
	if _, err := s.logger(); err != nil {
		return nil, err
	}
	s.api.cfg.Log.Info("SetLogLevel Called", "new_log_level", logrusName[req.NewLevel])
	s.api.cfg.LogLevel.Set(level)
	return s.logger()
}

// ResetLogLevel implements logger/v1: back to the configured log_level.
func (s *LoggerService) ResetLogLevel(context.Context, *loggerv1.ResetLogLevelRequest) (*types.Logger, error) {
	if _, err := s.logger(); err != nil {
		return nil, err
	}
	s.api.cfg.Log.Info("ResetLogLevel Called", "launch_log_level", logrusName[apiLevel(s.api.cfg.LogLevel.Launch())])
	s.api.cfg.LogLevel.Reset()
	return s.logger()
}
