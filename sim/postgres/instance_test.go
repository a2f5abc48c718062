package postgres

import "testing"

// TestInstanceStopStart: a stopped instance refuses connections, and
// started again it serves the same database with what was written
// before, at the same DSN.
func TestInstanceStopStart(t *testing.T) {
	inst := StartInstance(t)
	db := open(t, inst.DSN())
	if _, err := db.Exec(`CREATE TABLE kept (x INTEGER); INSERT INTO kept VALUES (7)`); err != nil {
		t.Fatal(err)
	}
	inst.Stop()
	if err := ping(inst.DSN()); err == nil {
		t.Fatal("a stopped instance accepted a connection")
	}
	if err := inst.Start(); err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(); err == nil {
		t.Fatal("Start of a running instance succeeded")
	}
	var x int
	if err := db.QueryRow(`SELECT x FROM kept`).Scan(&x); err != nil || x != 7 {
		t.Fatalf("after restart: x = %d, %v; want 7", x, err)
	}
}

// TestInstanceKill: a killed instance (its backends too) refuses
// connections at once, and started again it has recovered every commit
// acknowledged before the kill, the last one too.
func TestInstanceKill(t *testing.T) {
	inst := StartInstance(t)
	db := open(t, inst.DSN())
	if _, err := db.Exec(`CREATE TABLE kept (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if _, err := db.Exec(`INSERT INTO kept VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	inst.Kill()
	if err := ping(inst.DSN()); err == nil {
		t.Fatal("a killed instance accepted a connection")
	}
	if err := inst.Start(); err != nil {
		t.Fatal(err)
	}
	var count, last int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(x) FROM kept`).Scan(&count, &last); err != nil || count != n || last != n-1 {
		t.Fatalf("after the kill: %d rows up to %d, %v; want %d up to %d", count, last, err, n, n-1)
	}
}
