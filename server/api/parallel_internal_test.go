package api

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// TestEachParallel: every index is done exactly once, whether the batch
// runs on one goroutine (small, or one processor) or on several.
func TestEachParallel(t *testing.T) {
	for _, procs := range []int{1, 4} {
		prev := runtime.GOMAXPROCS(procs)
		for _, n := range []int{0, 1, 7, 8, 15, 16, 17, 100, 1000} {
			seen := make([]atomic.Int32, n)
			eachParallel(n, 8, func(i int) { seen[i].Add(1) })
			for i := range seen {
				if c := seen[i].Load(); c != 1 {
					t.Fatalf("GOMAXPROCS %d, n %d: index %d done %d times", procs, n, i, c)
				}
			}
		}
		runtime.GOMAXPROCS(prev)
	}
}
