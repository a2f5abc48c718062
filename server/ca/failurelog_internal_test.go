package ca

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestFailureLog: a step failing at every tick is logged when it starts
// failing, then once a minute with the count, and once when it works
// again; a new run of failures starts over.
func TestFailureLog(t *testing.T) {
	var buf bytes.Buffer
	f := failureLog{log: slog.New(slog.NewTextHandler(&buf, nil)), every: time.Minute}
	t0 := time.Unix(1_800_000_000, 0)
	down := errors.New("database is away")
	// 30 ticks of 10 s: 5 minutes of failures.
	for i := range 30 {
		f.failed(t0.Add(time.Duration(i)*10*time.Second), down)
	}
	f.succeeded()
	f.succeeded()
	f.failed(t0.Add(time.Hour), down)
	out := buf.String()
	for _, c := range []struct {
		msg  string
		want int
	}{
		{`msg="ca: rotation step failed"`, 2},
		{`msg="ca: rotation step still failing"`, 4},
		{`msg="ca: rotation step succeeded again" failed_attempts=30`, 1},
		{`attempts=25 failing_for=4m0s`, 1},
	} {
		if n := strings.Count(out, c.msg); n != c.want {
			t.Errorf("%q logged %d times, want %d; log:\n%s", c.msg, n, c.want, out)
		}
	}
	if n := strings.Count(out, "database is away"); n != 6 {
		t.Errorf("the error is in %d lines, want 6", n)
	}
}
