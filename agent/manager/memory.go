package manager

import (
	"runtime/debug"
	"sync"
	"time"
)

// Returning memory after a large change of the SVID cache.
//
// Minting thousands of SVIDs leaves the heap many times larger than what
// stays live: the server's responses, the Workload API messages and the
// cache saves of the burst are garbage once it ends, yet the collector's
// goal is twice the heap it last marked, which the burst inflated, and the
// runtime hands idle pages back to the kernel only slowly. With 10,000
// SVIDs the agent held about 30 MB live in 87 MiB of anonymous memory
// after the fill (bench/RESULTS-agent-memory.md). One forced collection
// that also returns the idle pages brings the resident size back to what
// is live; it costs a collection of the live heap, far less than the
// minting that made the change.
const (
	// releaseAfterSVIDs is the change (SVIDs added or dropped) that
	// counts as large: below it the garbage is a few MiB and the
	// collector's own pace is enough.
	releaseAfterSVIDs = 1000
	// releaseEvery bounds the forced collections during a long burst;
	// the last change of a burst is always followed by one, at most this
	// long after it.
	releaseEvery = 2 * time.Second
)

// memoryReleaser runs release after large changes, at most once every
// interval, and once more after the last change that a pending run would
// not see.
type memoryReleaser struct {
	release  func()
	interval time.Duration

	mu      sync.Mutex
	last    time.Time // when release last ran
	pending bool      // a run is scheduled
}

func newMemoryReleaser() *memoryReleaser {
	return &memoryReleaser{release: debug.FreeOSMemory, interval: releaseEvery}
}

// changed records that n SVIDs were added to or dropped from the cache.
func (r *memoryReleaser) changed(n int) {
	if r == nil || n < releaseAfterSVIDs {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending {
		return // the scheduled run comes after this change
	}
	r.pending = true
	wait := r.interval - time.Since(r.last)
	if wait < 0 {
		wait = 0
	}
	// On its own goroutine: the collection must not hold back the sync
	// that made the change, or the workloads waiting for its SVIDs.
	time.AfterFunc(wait, r.run)
}

func (r *memoryReleaser) run() {
	r.mu.Lock()
	// A change from now on schedules the next run a full interval away.
	r.pending, r.last = false, time.Now()
	r.mu.Unlock()
	r.release()
}
