package plugin

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// hung decides whether a failed call restarts the plugin; a wrong answer
// either restarts healthy plugins or never restarts hung ones.
func TestHung(t *testing.T) {
	const limit = 30 * time.Second
	hostCtx, cancel := context.WithTimeoutCause(context.Background(), time.Nanosecond, errHostTimeout)
	defer cancel()
	<-hostCtx.Done()
	callerCtx, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	<-callerCtx.Done()
	canceled, cancel3 := context.WithCancel(context.Background())
	cancel3()
	live := context.Background()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		code    codes.Code
		elapsed time.Duration
		want    bool
	}{
		{"host timer fired", hostCtx, codes.DeadlineExceeded, limit, true},
		{"host cancelled a stream receive", hostCtx, codes.Canceled, limit, true},
		{"plugin reported the deadline just before the host's timer", live, codes.DeadlineExceeded, limit - 10*time.Millisecond, true},
		{"an adapter's own deadline as long as the host's", callerCtx, codes.DeadlineExceeded, limit, true},
		{"caller's shorter deadline", callerCtx, codes.DeadlineExceeded, time.Second, false},
		{"caller gave up", canceled, codes.Canceled, limit, false},
		{"plugin's own quick DeadlineExceeded", live, codes.DeadlineExceeded, time.Second, false},
		{"other error after a long call", live, codes.Internal, limit, false},
	} {
		if got := hung(tc.ctx, tc.code, tc.elapsed, limit); got != tc.want {
			t.Errorf("%s: hung = %v, want %v", tc.name, got, tc.want)
		}
	}
}
