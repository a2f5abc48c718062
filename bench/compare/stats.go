package compare

import (
	"fmt"
	"sort"
	"time"
)

// Dist is a set of latency samples.
type Dist struct {
	Samples []time.Duration
}

// Add records one sample.
func (d *Dist) Add(v time.Duration) { d.Samples = append(d.Samples, v) }

// Merge adds every sample of o.
func (d *Dist) Merge(o Dist) { d.Samples = append(d.Samples, o.Samples...) }

// Quantile returns the nearest-rank q-quantile (0 < q <= 1), or 0 with no
// samples.
func (d Dist) Quantile(q float64) time.Duration {
	if len(d.Samples) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d.Samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Throughput is work done over wall time, with per-call latencies.
type Throughput struct {
	Calls Dist
	// Items counts the units of work (calls, or CSRs for batches).
	Items int
	Wall  time.Duration
}

// Merge adds o's calls, items and wall time.
func (t *Throughput) Merge(o Throughput) {
	t.Calls.Merge(o.Calls)
	t.Items += o.Items
	t.Wall += o.Wall
}

// PerSecond is items per second of wall time.
func (t Throughput) PerSecond() float64 {
	if t.Wall <= 0 {
		return 0
	}
	return float64(t.Items) / t.Wall.Seconds()
}

// fmtDur prints a duration with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gµs", float64(d)/float64(time.Microsecond))
	}
}

// ratio prints how many times better ours is than the peer: for costs
// (latency, memory) peer/ours, for rates ours/peer. Above 1 ours is ahead.
func ratio(ours, peer float64, cost bool) string {
	if ours <= 0 || peer <= 0 {
		return "–"
	}
	r := ours / peer
	if cost {
		r = peer / ours
	}
	return fmt.Sprintf("%.2f×", r)
}
