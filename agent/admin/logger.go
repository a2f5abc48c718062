package admin

import (
	"context"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"

	"github.com/spiffe-hw/spire-hw/logging/loggerapi"
)

// loggerService implements spire.api.agent.logger.v1.Logger with the
// server's semantics (logging/loggerapi) on the agent's live level.
type loggerService struct {
	loggerv1.UnimplementedLoggerServer
	s loggerapi.Service
}

func newLoggerService(cfg Config) *loggerService {
	return &loggerService{s: loggerapi.Service{Level: cfg.LogLevel, Log: cfg.log().With("subsystem", "logger_api"), Daemon: "agent"}}
}

func registerLogger(s grpc.ServiceRegistrar, l *loggerService) { loggerv1.RegisterLoggerServer(s, l) }

// GetLogger implements logger/v1.
func (l *loggerService) GetLogger(context.Context, *loggerv1.GetLoggerRequest) (*types.Logger, error) {
	return l.s.Get()
}

// SetLogLevel implements logger/v1.
func (l *loggerService) SetLogLevel(_ context.Context, req *loggerv1.SetLogLevelRequest) (*types.Logger, error) {
	return l.s.Set(req.GetNewLevel())
}

// ResetLogLevel implements logger/v1: back to the configured log_level.
func (l *loggerService) ResetLogLevel(context.Context, *loggerv1.ResetLogLevelRequest) (*types.Logger, error) {
	return l.s.Reset()
}
