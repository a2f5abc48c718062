package manager

import (
	"sync/atomic"
	"testing"
	"time"
)

// A large change releases memory once, soon; small ones never; a burst of
// large ones releases at most once per interval and once after its last
// change.
func TestMemoryReleaser(t *testing.T) {
	var runs atomic.Int32
	r := &memoryReleaser{release: func() { runs.Add(1) }, interval: 200 * time.Millisecond}
	waitRuns := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runs.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%d releases, want %d", runs.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	r.changed(releaseAfterSVIDs - 1)
	time.Sleep(50 * time.Millisecond)
	if n := runs.Load(); n != 0 {
		t.Fatalf("%d releases after a small change", n)
	}

	r.changed(releaseAfterSVIDs)
	waitRuns(1)

	// A burst right after: nothing before the interval is over, then one
	// release for all of it.
	start := time.Now()
	for range 5 {
		r.changed(5 * releaseAfterSVIDs)
		time.Sleep(10 * time.Millisecond)
	}
	waitRuns(2)
	if since := time.Since(start); since < 150*time.Millisecond {
		t.Fatalf("second release %v after the first, want the interval", since)
	}
	time.Sleep(300 * time.Millisecond)
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d releases for two large changes apart and a burst, want 2", n)
	}

	var nilR *memoryReleaser
	nilR.changed(10 * releaseAfterSVIDs) // a Manager made without one
}
