// Package parallel spreads a batch of independent CPU-bound items (CSRs
// to sign, keys to make, chains to verify) over the processors.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Each calls do for every index below n, on up to GOMAXPROCS goroutines
// that each take at least per indexes, and returns when all are done.
// With one processor, or fewer than 2*per indexes, it runs them in order
// on the caller's goroutine. do must be safe to call concurrently for
// different indexes; the order of the calls is not defined.
func Each(n, per int, do func(i int)) {
	workers := runtime.GOMAXPROCS(0)
	if per > 0 {
		workers = min(workers, n/per)
	}
	if workers <= 1 {
		for i := range n {
			do(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				do(i)
			}
		})
	}
	wg.Wait()
}
