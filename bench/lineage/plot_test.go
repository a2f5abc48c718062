package lineage

import (
	"strings"
	"testing"
)

// TestPlot checks the plot's shape: a title and two bars per row.
func TestPlot(t *testing.T) {
	svg := PlotSVG("Workload attestation latency per call", []Bar{
		{"procfs unix", 80.3, 218},
		{"lineage eBPF", 5.6, 42},
	})
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<rect") != 4 || !strings.Contains(svg, "p99 218.0") {
		t.Fatalf("bad plot: %s", svg)
	}
}
