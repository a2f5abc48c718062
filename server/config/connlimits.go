package config

import (
	"time"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// ConnectionLimits is the server block's connection_limits block, our own
// (SPIRE has no such block, so no SPIRE key can collide with it): caps and
// timeouts of the agent TCP listener. Zero values leave the listener's
// defaults. The fields are those of server/endpoints.Limits, in the same
// order, so that the server converts one into the other.
type ConnectionLimits struct {
	MaxConnections              int
	MaxConnectionsPerID         int
	MaxHandshakes               int
	MaxHandshakesPerSource      int
	MaxUnauthenticated          int
	MaxUnauthenticatedPerSource int
	HandshakeTimeout            time.Duration
	IdleTimeout                 time.Duration
}

func parseConnectionLimits(s *hclconf.Section) ConnectionLimits {
	var cl ConnectionLimits
	b := s.Block("connection_limits")
	if b == nil {
		return cl
	}
	b.PositiveInt("max_connections", &cl.MaxConnections)
	b.PositiveInt("max_connections_per_id", &cl.MaxConnectionsPerID)
	b.PositiveInt("max_handshakes", &cl.MaxHandshakes)
	b.PositiveInt("max_handshakes_per_source", &cl.MaxHandshakesPerSource)
	b.PositiveInt("max_unauthenticated", &cl.MaxUnauthenticated)
	b.PositiveInt("max_unauthenticated_per_source", &cl.MaxUnauthenticatedPerSource)
	b.PositiveDuration("handshake_timeout", &cl.HandshakeTimeout)
	b.PositiveDuration("unauthenticated_idle_timeout", &cl.IdleTimeout)
	b.Finish()
	return cl
}
