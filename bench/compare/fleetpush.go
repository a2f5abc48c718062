package compare

import (
	"fmt"
	"strings"
)

// fleetPushSection compares, size by size, ours polling with ours
// holding change-notice streams (Harness.FleetPush), and works out what
// a subscribed idle agent costs the server; "" when the run had no push
// fleet.
func (r *Results) fleetPushSection(off, on string) string {
	offSteps, onSteps := r.Fleet[off], r.Fleet[on]
	if len(offSteps) == 0 || len(onSteps) == 0 {
		return ""
	}
	stepOf := func(steps []FleetStep, n int) (FleetStep, bool) {
		for _, st := range steps {
			if st.Agents == n {
				return st, true
			}
		}
		return FleetStep{}, false
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n### 5b. Fleet with change notices: %s against %s\n\n", off, on)
	fmt.Fprintf(&b, "The fleet of scenario 5, twice in this run with the same binaries: once polling only, once with every simulated agent also holding its change-notice stream (sim/fleet's WithPush: opened after attestation, a sync at once on every notice, the poll kept). A size is measured once every SVID is held and, with push, every stream is open; the window sees no change, so it measures idle subscribers. RSS is the mean of one read a second over the window (and the read at its end). After the window one entry is created for one agent and timed from the call until that agent holds its SVID.\n\n")
	b.WriteString("| agents | fleet | p50 sync | p99 sync | server CPU | server RSS, mean (end) | streams open | notices (syncs they started) in window | one entry to its SVID |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range r.Sizes.FleetSteps {
		for _, impl := range []string{off, on} {
			st, ok := stepOf(r.Fleet[impl], n)
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %.3f cores | %s (%s) | %s | %d (%d) | %s |\n", thousands(n), impl,
				fmtDur(st.P50), fmtDur(st.P99), st.CPU, bytesFmt(float64(st.RSSAvg)), bytesFmt(float64(st.RSS)),
				thousands(int(st.Subscribed)), st.Notices, st.NoticeSyncs, fmtDur(st.Propagation))
		}
	}
	b.WriteString("\nWhat the streams add, per subscribed agent (push minus polling at the same size, divided by the size):\n\n")
	b.WriteString("| agents | server CPU per agent | server RSS per agent (mean) |\n|---:|---:|---:|\n")
	for _, n := range r.Sizes.FleetSteps {
		a, okA := stepOf(offSteps, n)
		p, okP := stepOf(onSteps, n)
		if !okA || !okP {
			continue
		}
		fmt.Fprintf(&b, "| %s | %.1f µcores | %s |\n", thousands(n), (p.CPU-a.CPU)/float64(n)*1e6, kibFmt(float64(p.RSSAvg-a.RSSAvg)/float64(n)))
	}
	// The slope across sizes leaves out what does not grow with the
	// fleet (the binary, caches of fixed size).
	first, last := r.Sizes.FleetSteps[0], r.Sizes.FleetSteps[len(r.Sizes.FleetSteps)-1]
	var slopes []string
	for _, impl := range []string{off, on} {
		lo, ok1 := stepOf(r.Fleet[impl], first)
		hi, ok2 := stepOf(r.Fleet[impl], last)
		if ok1 && ok2 && last > first {
			slopes = append(slopes, fmt.Sprintf("%s %s", impl, kibFmt(float64(hi.RSSAvg-lo.RSSAvg)/float64(last-first))))
		}
	}
	if len(slopes) > 0 {
		fmt.Fprintf(&b, "\nServer RSS per agent from %s to %s agents ((mean RSS at %s − at %s) / %s): %s.\n",
			thousands(first), thousands(last), thousands(last), thousands(first), thousands(last-first), strings.Join(slopes, ", "))
	}
	return b.String() + "\n"
}

func kibFmt(v float64) string { return fmt.Sprintf("%.1f KiB", v/(1<<10)) }
