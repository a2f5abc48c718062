package telemetry

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
)

// RPC counts gRPC calls as SPIRE's metrics middleware does: a call counter
// per method under RPCKey (spire_server_rpc_agent_v1_agent_attest_agent
// and ..._elapsed_time in Prometheus, labelled status). A stream is one
// call, counted when it ends. On the agent it also keeps SPIRE's
// per-service connection metrics (workload_api.connection and
// workload_api.connections, the same for sds_api and
// delegated_identity_api), where SPIRE counts every call as a connection.
type RPC struct {
	m     *Metrics
	conns map[string]*atomic.Int32
}

// connectionServices maps a gRPC service to SPIRE's metric key for its
// connections.
var connectionServices = map[string]string{
	"SpiffeWorkloadAPI": "workload_api",
	"envoy.service.secret.v3.SecretDiscoveryService":         "sds_api",
	"spire.api.agent.delegatedidentity.v1.DelegatedIdentity": "delegated_identity_api",
}

// NewRPC returns the interceptors for m; with a nil m they pass calls
// through.
func NewRPC(m *Metrics) *RPC {
	r := &RPC{m: m, conns: make(map[string]*atomic.Int32)}
	for _, k := range connectionServices {
		r.conns[k] = new(atomic.Int32)
	}
	return r
}

func (r *RPC) begin(fullMethod string) (*Call, func()) {
	c := r.m.StartCall(RPCKey(fullMethod)...)
	service := fullMethod
	if len(service) > 0 && service[0] == '/' {
		service = service[1:]
	}
	for i := range service {
		if service[i] == '/' {
			service = service[:i]
			break
		}
	}
	key, ok := connectionServices[service]
	if !ok {
		return c, func() {}
	}
	n := r.conns[key]
	r.m.IncrCounter([]string{key, "connection"}, 1)
	r.m.SetGauge([]string{key, "connections"}, float32(n.Add(1)))
	return c, func() { r.m.SetGauge([]string{key, "connections"}, float32(n.Add(-1))) }
}

// Unary is a unary server interceptor.
func (r *RPC) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	if r == nil || r.m == nil {
		return handler(ctx, req)
	}
	c, end := r.begin(info.FullMethod)
	defer end()
	defer c.Done(&err)
	return handler(ctx, req)
}

// Stream is a stream server interceptor.
func (r *RPC) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	if r == nil || r.m == nil {
		return handler(srv, ss)
	}
	c, end := r.begin(info.FullMethod)
	defer end()
	defer c.Done(&err)
	return handler(srv, ss)
}
