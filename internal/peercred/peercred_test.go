package peercred

import (
	"net"
	"os"
	"testing"
)

func TestRead(t *testing.T) {
	path := t.TempDir() + "/s.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := Read(s)
	if err != nil {
		t.Fatal(err)
	}
	if int(u.Pid) != os.Getpid() || int(u.Uid) != os.Getuid() || int(u.Gid) != os.Getgid() {
		t.Fatalf("got pid %d uid %d gid %d, want this process's %d %d %d", u.Pid, u.Uid, u.Gid, os.Getpid(), os.Getuid(), os.Getgid())
	}
	if _, err := Read(pipeConn{}); err == nil {
		t.Fatal("a connection without a descriptor gave credentials")
	}
}

// pipeConn is a net.Conn with no descriptor behind it.
type pipeConn struct{ net.Conn }
