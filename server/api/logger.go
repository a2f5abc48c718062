package api

import (
	"context"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/logging/loggerapi"
)

// LoggerService implements logger/v1: it reads and changes the server's
// log level while it runs (`spire-server logger get|set|reset`), so that an
// operator can turn on debug logs during an incident without a restart.
// Only the admin socket may call it, as in SPIRE. The agent serves the same
// behaviour (logging/loggerapi) on its admin socket.
type LoggerService struct {
	loggerv1.UnimplementedLoggerServer
	api *API
}

func (s *LoggerService) service() *loggerapi.Service {
	return &loggerapi.Service{Level: s.api.cfg.LogLevel, Log: s.api.cfg.Log, Daemon: "server"}
}

// GetLogger implements logger/v1.
func (s *LoggerService) GetLogger(context.Context, *loggerv1.GetLoggerRequest) (*types.Logger, error) {
	return s.service().Get()
}

// SetLogLevel implements logger/v1.
func (s *LoggerService) SetLogLevel(_ context.Context, req *loggerv1.SetLogLevelRequest) (*types.Logger, error) {
	return s.service().Set(req.NewLevel)
}

// ResetLogLevel implements logger/v1: back to the configured log_level.
func (s *LoggerService) ResetLogLevel(context.Context, *loggerv1.ResetLogLevelRequest) (*types.Logger, error) {
	return s.service().Reset()
}
