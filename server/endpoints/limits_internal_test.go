package endpoints

import "testing"

func TestMaxConnectionsFor(t *testing.T) {
	for _, tc := range []struct {
		nofile int64
		want   int
	}{
		{1024, 1024 - 256}, // the minimum reserve
		{20000, 18000},     // a tenth kept back
		{1 << 20, 943719},  // the reserve rounds down
		{200, 16},          // too small to keep the reserve: a floor
	} {
		if got := maxConnectionsFor(tc.nofile); got != tc.want {
			t.Errorf("RLIMIT_NOFILE %d: got %d, want %d", tc.nofile, got, tc.want)
		}
	}
	if got := DefaultMaxConnections(); got < 16 {
		t.Errorf("DefaultMaxConnections() = %d", got)
	}
}
