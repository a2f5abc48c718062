package postgres

import (
	"context"
	"testing"
	"time"
)

// TestReplica: the replica shows the primary's commits once it has caught
// up, refuses writes, shows nothing new while its replay is paused, and
// catches up when it resumes.
func TestReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst := StartInstance(t)
	primary := open(t, inst.DSN())
	if _, err := primary.Exec(`CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	rep := inst.StartReplica(t)
	replica := open(t, rep.DSN())
	count := func() int {
		t.Helper()
		var n int
		if err := replica.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
			t.Fatalf("read the replica: %v", err)
		}
		return n
	}
	if _, err := replica.Exec(`INSERT INTO t VALUES (9)`); err == nil {
		t.Fatal("the replica took a write")
	}
	if _, err := primary.Exec(`INSERT INTO t VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	if err := rep.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("caught-up replica has %d rows, want 2", n)
	}
	if err := rep.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Exec(`INSERT INTO t VALUES (3)`); err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	if err := rep.CatchUp(short); err == nil {
		t.Fatal("a paused replica caught up")
	}
	if n := count(); n != 2 {
		t.Fatalf("paused replica has %d rows, want the 2 it had", n)
	}
	if err := rep.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rep.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 3 {
		t.Fatalf("resumed replica has %d rows, want 3", n)
	}
}
