package telemetry

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// RPC counts gRPC calls by method and status code and observes their
// duration. Streams are counted when they end, with their whole lifetime.
type RPC struct {
	calls *prometheus.CounterVec
	dur   *prometheus.HistogramVec
}

// NewRPC registers the RPC metrics as <prefix>_rpc_calls_total and
// <prefix>_rpc_duration_seconds in reg.
func NewRPC(reg prometheus.Registerer, prefix string) *RPC {
	r := &RPC{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_rpc_calls_total",
			Help: "gRPC calls handled, by full method name and status code.",
		}, []string{"method", "code"}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    prefix + "_rpc_duration_seconds",
			Help:    "Time from a gRPC call's arrival to its answer (unary calls only).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"method"}),
	}
	reg.MustRegister(r.calls, r.dur)
	return r
}

// Unary is a unary server interceptor.
func (r *RPC) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	r.dur.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	r.calls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

// Stream is a stream server interceptor.
func (r *RPC) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	r.calls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}
