package lineage

import (
	"context"
	"testing"
)

// BenchmarkAttest is one attestation of a live process from the table, with
// the executable's hash already cached: the per-call cost of the eBPF path.
// Profile it with -cpuprofile to see where a call's time goes.
func BenchmarkAttest(b *testing.B) {
	a := newEBPF(b, Config{DiscoverWorkloadPath: true})
	cmd, fd := start(b, "/bin/sleep", "60")
	pid := int32(cmd.Process.Pid)
	ctx := context.Background()
	if _, err := a.Attest(ctx, pid, fd); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(ctx, pid, fd); err != nil {
			b.Fatal(err)
		}
	}
}
