package ca

import (
	"testing"
	"time"
)

// TestNextDeadline: Run must wake at each rotation deadline, not only on its
// ten-second tick, or a CA shorter-lived than a few ticks expires before its
// successor is activated.
func TestNextDeadline(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := &Manager{}
	active := &x509Slot{slotMeta: slotMeta{index: 0, status: statusActive, issuedAt: t0, notAfter: t0.Add(60 * time.Second)}}
	m.x509[0] = active
	if got, ok := m.nextDeadline(t0.Add(time.Second)); !ok || !got.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("before half-life: next deadline %v, want preparation at +30s", got.Sub(t0))
	}
	m.x509[1] = &x509Slot{slotMeta: slotMeta{index: 1, status: statusPrepared, issuedAt: t0.Add(30 * time.Second), notAfter: t0.Add(90 * time.Second)}}
	if got, _ := m.nextDeadline(t0.Add(31 * time.Second)); !got.Equal(t0.Add(50 * time.Second)) {
		t.Fatalf("prepared on time: next deadline %v, want activation at +50s", got.Sub(t0))
	}
	// Prepared late: activation waits for a third of a life in the bundle,
	// but never past the active CA's expiry.
	m.x509[1].issuedAt = t0.Add(45 * time.Second)
	if got, _ := m.nextDeadline(t0.Add(46 * time.Second)); !got.Equal(t0.Add(60 * time.Second)) {
		t.Fatalf("prepared late: next deadline %v, want expiry at +60s", got.Sub(t0))
	}
}
