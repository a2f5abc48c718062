package endpoints

import (
	"net"
	"testing"
)

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

func TestSourceIP(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.2:4000", "127.0.0.2"},
		{"[::ffff:10.1.2.3]:4000", "10.1.2.3"}, // IPv4-mapped: the IPv4 address
		{"[2001:db8:1:2:aaaa::1]:4000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::7]:5000", "2001:db8:1:2::/64"}, // same /64, same key
		{"[2001:db8:1:3::1]:4000", "2001:db8:1:3::/64"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceIP(a); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.addr, got, tc.want)
		}
	}
}
