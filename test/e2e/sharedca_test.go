package e2e

import (
	"syscall"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

// TestSharedDatabaseServersRestart: servers sharing one PostgreSQL database
// each keep their own CA journal, so that each restarts on its own CA,
// after a clean stop and after kill -9. (With one journal for the whole
// database, the server that wrote last owned it, and any other failed to
// start: "key does not match the journal".) The bundle holds each server's
// authority once: no restart made a new CA.
func TestSharedDatabaseServersRestart(t *testing.T) {
	dsn := postgres.Start(t)
	srvA := startSharedServer(t, dsn)
	srvB := startSharedServer(t, dsn)
	sharedBundle(t, srvB, 2)
	active := func(s *serverEnv) (x509, jwt string) {
		x509, _, _ = authorityIDs(t, s.cli(t, "localauthority", "x509", "show"))
		jwt, _, _ = authorityIDs(t, s.cli(t, "localauthority", "jwt", "show"))
		if x509 == "" || jwt == "" {
			t.Fatalf("no active authority: X.509 %q, JWT %q", x509, jwt)
		}
		return x509, jwt
	}
	x509A, jwtA := active(srvA)
	x509B, jwtB := active(srvB)
	if x509A == x509B || jwtA == jwtB {
		t.Fatal("two servers share an authority")
	}

	srvA.proc.Stop()
	srvA.start(t)
	if x, j := active(srvA); x != x509A || j != jwtA {
		t.Fatalf("after a restart server A has X.509 %s, JWT %s; want %s, %s", x, j, x509A, jwtA)
	}
	if err := syscall.Kill(srvB.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-srvB.proc.Done()
	srvB.start(t)
	if x, j := active(srvB); x != x509B || j != jwtB {
		t.Fatalf("after kill -9 server B has X.509 %s, JWT %s; want %s, %s", x, j, x509B, jwtB)
	}
	if n := len(sharedBundle(t, srvA, 2).X509Authorities()); n != 2 {
		t.Fatalf("bundle holds %d X.509 authorities after the restarts, want 2", n)
	}
}
