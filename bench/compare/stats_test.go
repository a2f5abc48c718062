package compare

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) Dist {
		var d Dist
		for _, x := range v {
			d.Add(time.Duration(x) * time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		name string
		d    Dist
		q    float64
		want time.Duration
	}{
		{"empty", Dist{}, 0.5, 0},
		{"one sample", ms(7), 0.99, 7 * time.Millisecond},
		{"median of unsorted odd", ms(5, 1, 3), 0.5, 3 * time.Millisecond},
		{"median of even is lower middle", ms(4, 1, 3, 2), 0.5, 2 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(seq(100)...), 0.99, 99 * time.Millisecond},
		{"p99 of 50 is the max", ms(seq(50)...), 0.99, 50 * time.Millisecond},
		{"max", ms(9, 2, 30, 4), 1, 30 * time.Millisecond},
	} {
		if got := tc.d.Quantile(tc.q); got != tc.want {
			t.Errorf("%s: Quantile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = n - i
	}
	return s
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ours, peer float64
		cost       bool
		want       string
	}{
		{"faster latency", 1, 4, true, "4.00×"},
		{"slower latency", 4, 1, true, "0.25×"},
		{"higher rate", 300, 100, false, "3.00×"},
		{"missing peer", 1, 0, false, "–"},
	} {
		if got := ratio(tc.ours, tc.peer, tc.cost); got != tc.want {
			t.Errorf("%s: ratio = %s, want %s", tc.name, got, tc.want)
		}
	}
}
