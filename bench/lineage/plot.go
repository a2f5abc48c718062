package lineage

import (
	"fmt"
	"math"
	"strings"
)

// Bar is one bar of a latency plot.
type Bar struct {
	Label string
	P50   float64 // microseconds
	P99   float64 // microseconds
}

// PlotSVG draws p50 and p99 bars on a log scale, so that microsecond
// lookups and 50 ms hashes fit one picture.
func PlotSVG(title string, bars []Bar) string {
	const w, rowH, left = 760, 46, 250
	h := 60 + rowH*len(bars)
	x := func(us float64) float64 { return (math.Log10(max(us, 1)) / 6) * (w - left - 20) } // 1 us .. 1 s
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">%s (log scale, µs)</text>`+"\n", title)
	for i, bar := range bars {
		y := 40 + i*rowH
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+18, bar.Label)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="14" fill="#4a7"/><text x="%.1f" y="%d">p50 %.1f</text>`+"\n", left, y, x(bar.P50), float64(left)+x(bar.P50)+4, y+11, bar.P50)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="14" fill="#c63"/><text x="%.1f" y="%d">p99 %.1f</text>`+"\n", left, y+16, x(bar.P99), float64(left)+x(bar.P99)+4, y+27, bar.P99)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
