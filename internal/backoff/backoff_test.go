package backoff

import (
	"testing"
	"time"
)

func TestDelayBounds(t *testing.T) {
	for n := 1; n <= 20; n++ {
		for _, r := range []float64{0, 0.5, 0.999999} {
			d := Delay(n, r)
			full := min(Base<<min(n-1, 10), Cap)
			if d < full/2 || d > full {
				t.Fatalf("Delay(%d, %v) = %v, want in [%v, %v]", n, r, d, full/2, full)
			}
			if d > Cap {
				t.Fatalf("Delay(%d) = %v exceeds cap", n, d)
			}
		}
	}
	if Delay(1, 0) != 500*time.Millisecond || Delay(3, 0.999999) >= 4*time.Second {
		t.Fatal("Delay does not grow as documented")
	}
}
