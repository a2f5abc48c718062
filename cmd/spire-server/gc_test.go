package main

import (
	"runtime/debug"
	"testing"
)

func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	if p, src := setGCPercent(""); p != DefaultGCPercent || src != "default" {
		t.Fatalf("without GOGC: %d from %s, want %d from default", p, src, DefaultGCPercent)
	}
	if p := debug.SetGCPercent(100); p != DefaultGCPercent {
		t.Fatalf("without GOGC the runtime runs at %d, want %d", p, DefaultGCPercent)
	}

	// With GOGC=77 the runtime has set 77 before main: it stays.
	debug.SetGCPercent(77)
	if p, src := setGCPercent("77"); p != 77 || src != "GOGC" {
		t.Fatalf("with GOGC=77: %d from %s", p, src)
	}
	if p := debug.SetGCPercent(100); p != 77 {
		t.Fatalf("with GOGC=77 the runtime runs at %d", p)
	}
	// GOGC=off is kept off.
	debug.SetGCPercent(-1)
	if p, _ := setGCPercent("off"); p != -1 {
		t.Fatalf("with GOGC=off: %d", p)
	}
}
