package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestEach: every index is done exactly once, whether the batch runs on
// the caller's goroutine (small, or one processor) or on several, and
// a batch large enough runs on more than one goroutine.
func TestEach(t *testing.T) {
	for _, procs := range []int{1, 4} {
		prev := runtime.GOMAXPROCS(procs)
		for _, n := range []int{0, 1, 7, 8, 15, 16, 17, 100, 1000} {
			seen := make([]atomic.Int32, n)
			Each(n, 8, func(i int) { seen[i].Add(1) })
			for i := range seen {
				if c := seen[i].Load(); c != 1 {
					t.Fatalf("GOMAXPROCS %d, n %d: index %d done %d times", procs, n, i, c)
				}
			}
		}
		runtime.GOMAXPROCS(prev)
	}
}

// TestEachSpreads: with several processors, two indexes run at once (each
// waits for the other), which a loop on one goroutine could not do.
func TestEachSpreads(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	var started atomic.Int32
	both := make(chan struct{})
	Each(2, 1, func(int) {
		if started.Add(1) == 2 {
			close(both)
		}
		select {
		case <-both:
		case <-time.After(5 * time.Second):
			t.Error("the two indexes never ran at the same time")
		}
	})
}
