package compare

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// FleetSVG plots p99 sync latency against fleet size (both log scales),
// one line per implementation, with the FleetTarget line: where a line
// crosses it is that server's capacity on this machine.
func (r *Results) FleetSVG() string {
	const w, h, left, right, top, bottom = 760, 340, 70, 20, 40, 50
	minN, maxN := math.Inf(1), math.Inf(-1)
	minL, maxL := float64(FleetTarget)/10, float64(FleetTarget)*10
	for _, steps := range r.Fleet {
		for _, st := range steps {
			minN, maxN = math.Min(minN, float64(st.Agents)), math.Max(maxN, float64(st.Agents))
			minL, maxL = math.Min(minL, float64(max(st.P99, time.Microsecond))), math.Max(maxL, float64(st.P99))
		}
	}
	if math.IsInf(minN, 1) {
		return ""
	}
	minN, maxN = math.Pow(10, math.Floor(math.Log10(minN))), math.Pow(10, math.Ceil(math.Log10(maxN*1.01)))
	minL, maxL = math.Pow(10, math.Floor(math.Log10(minL))), math.Pow(10, math.Ceil(math.Log10(maxL)))
	x := func(n float64) float64 {
		return left + (math.Log10(n)-math.Log10(minN))/(math.Log10(maxN)-math.Log10(minN))*(w-left-right)
	}
	y := func(l float64) float64 {
		return h - bottom - (math.Log10(l)-math.Log10(minL))/(math.Log10(maxL)-math.Log10(minL))*(h-top-bottom)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">5. p99 sync latency against fleet size (log scales)</text>`+"\n")
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888"/><line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="#888"/>`+"\n",
		left, y(minL), w-right, y(minL), left, top, left, y(minL))
	for n := minN; n <= maxN*1.001; n *= 10 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s agents</text>`+"\n", x(n), y(minL)+18, thousands(int(n)))
	}
	for l := minL; l <= maxL*1.001; l *= 10 {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(l)+4, fmtDur(time.Duration(l)))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c00" stroke-dasharray="5 4"/><text x="%d" y="%.1f" fill="#c00" text-anchor="end">target %v</text>`+"\n",
		left, y(float64(FleetTarget)), w-right, y(float64(FleetTarget)), w-right, y(float64(FleetTarget))-4, FleetTarget)
	for i, impl := range colsOf(r, r.Fleet) {
		color := plotColors[i%len(plotColors)]
		var pts []string
		for _, st := range r.Fleet[impl] {
			px, py := x(float64(st.Agents)), y(float64(max(st.P99, time.Microsecond)))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px, py, color)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", left+10, top+6+i*16, color, left+28, top+11+i*16, impl)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
