// Package flood measures what a flood of idle connections from one caller
// costs the daemons, and whether a legitimate caller is still served
// during it: the agent's Workload API socket (agent_*_test.go, flooded by
// uid nobody) and the server's listeners (server_*_test.go). As root,
// `go test ./bench/flood` runs small, checking only invariants;
//
//	BENCH_REPORT=1 go test -count=1 -timeout 20m ./bench/flood
//
// runs at full size and writes bench/RESULTS-flood-*.md.
package flood

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FDs counts the open descriptors of process pid.
func FDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("flood: count descriptors: %w", err)
	}
	return len(ents), nil
}

// RSSKiB is the resident set size of process pid (VmRSS), in KiB.
func RSSKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("flood: read RSS: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("flood: no VmRSS in /proc/%d/status", pid)
}

// Quantile returns the q-quantile (0..1) of ds by the nearest rank; ds is
// sorted in place. It is 0 for no samples.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds)) + 0.5)
	return ds[min(max(i-1, 0), len(ds)-1)]
}
