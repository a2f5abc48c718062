package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"syscall"

	"golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
)

func TestSlotsCaps(t *testing.T) {
	s := NewSlots(3, 2)
	r1, why := s.Acquire("a")
	if why != "" {
		t.Fatal(why)
	}
	r2, _ := s.Acquire("a")
	if _, why := s.Acquire("a"); why != ReasonPerKey {
		t.Fatalf("third for a: %q, want per-key refusal", why)
	}
	r3, why := s.Acquire("b")
	if why != "" {
		t.Fatal(why)
	}
	if _, why := s.Acquire("c"); why != ReasonTotal {
		t.Fatalf("fourth in total: %q, want total refusal", why)
	}
	r1()
	r1() // a second release must not free another slot
	if tot, a := s.Count("a"); tot != 2 || a != 1 {
		t.Fatalf("after release: total %d, a %d; want 2, 1", tot, a)
	}
	r2()
	r3()
	if tot, _ := s.Count(""); tot != 0 || len(s.byKey) != 0 {
		t.Fatalf("all released: total %d, keys %v", tot, s.byKey)
	}
}

// TestListenerPerUID floods a Unix socket from one key and checks the
// listener closes what is over the cap, logs it once, keeps serving
// another key, and frees slots on close.
func TestListenerPerUID(t *testing.T) {
	path := t.TempDir() + "/s.sock"
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	nextKey := "flood"
	var keyMu sync.Mutex
	l := Wrap(inner, Config{
		Name: "test", PerKey: 4, Total: 10, KeyName: "uid",
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Key: func(c net.Conn) (string, error) {
			// Real peer credentials must still be readable through
			// the wrapper's SyscallConn; the key itself is the test's.
			if _, err := unix.GetsockoptUcred(fd(t, c), unix.SOL_SOCKET, unix.SO_PEERCRED); err != nil {
				return "", err
			}
			keyMu.Lock()
			defer keyMu.Unlock()
			return nextKey, nil
		},
	})
	defer l.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	var held []net.Conn
	for len(held) < 4 {
		select {
		case c := <-accepted:
			held = append(held, c)
		case <-time.After(5 * time.Second):
			t.Fatalf("accepted %d of the first 4 connections", len(held))
		}
	}
	// The 16 over the cap are closed by the server: their reads end.
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	if closed.Load() != 16 {
		t.Fatalf("%d connections closed by the listener, want 16", closed.Load())
	}
	if n := strings.Count(logs.String(), "per-peer connection limit reached"); n != 1 {
		t.Fatalf("%d refusal lines for one key within the interval, want 1:\n%s", n, logs.String())
	}
	// Another key is still served while the first is at its cap.
	keyMu.Lock()
	nextKey = "root"
	keyMu.Unlock()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-accepted:
		got.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a connection from another key was not accepted")
	}
	for _, h := range held {
		h.Close()
	}
	if tot, _ := l.Slots().Count(""); tot != 0 {
		t.Fatalf("%d slots held after every connection closed", tot)
	}
	for _, c := range clients {
		c.Close()
	}
}

func fd(t *testing.T, c net.Conn) int {
	rc, err := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	}).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out int
	rc.Control(func(f uintptr) { out = int(f) })
	return out
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestRefusalLogInterval(t *testing.T) {
	var logs syncbuf.Buffer
	r := NewRefusalLog(slog.New(slog.NewTextHandler(&logs, nil)), 50*time.Millisecond)
	for i := 0; i < 5; i++ {
		r.Refused("k", "Refused")
	}
	time.Sleep(60 * time.Millisecond)
	r.Refused("k", "Refused")
	out := logs.String()
	if n := strings.Count(out, "Refused"); n != 2 {
		t.Fatalf("%d lines, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "suppressed_since_last_line=4") {
		t.Fatalf("second line does not count the 4 suppressed:\n%s", out)
	}
}

// TestListenerStatsAndUnidentified: a peer whose key cannot be read is
// refused, counted, and logged once per interval however often it comes;
// Stats count what was accepted and refused by reason.
func TestListenerStatsAndUnidentified(t *testing.T) {
	path := t.TempDir() + "/s.sock"
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	var calls atomic.Int32
	l := Wrap(inner, Config{
		Name: "test", PerKey: 1, Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Key: func(net.Conn) (string, error) {
			// The first three cannot be identified; then one key.
			if calls.Add(1) <= 3 {
				return "", errors.New("no credentials")
			}
			return "k", nil
		},
	})
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	// Three unidentified, one accepted, one over the per-key cap.
	for range 5 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	var held net.Conn
	select {
	case held = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// The fifth Key call returned; its refusal follows at once.
	var st Stats
	for time.Now().Before(deadline) {
		if st = l.Stats(); st.Refused[ReasonPerKey] == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.Open != 1 || st.Accepted != 1 || st.Refused[ReasonUnidentified] != 3 || st.Refused[ReasonPerKey] != 1 || st.Refused[ReasonTotal] != 0 {
		t.Fatalf("stats %+v, want 1 open, 1 accepted, 3 unidentified, 1 over the per-key cap", st)
	}
	if n := strings.Count(logs.String(), "cannot identify the peer"); n != 1 {
		t.Fatalf("%d lines for unidentified peers within the interval, want 1:\n%s", n, logs.String())
	}
	held.Close()
	if st := l.Stats(); st.Open != 0 {
		t.Fatalf("%d open after close", st.Open)
	}
}

// TestRefusalLogManyKeys shows the records stay bounded when more keys
// refuse than it keeps, and that the keys past the bound still get a line,
// marked as shared.
func TestRefusalLogManyKeys(t *testing.T) {
	var logs syncbuf.Buffer
	r := NewRefusalLog(slog.New(slog.NewTextHandler(&logs, nil)), time.Hour)
	for i := 0; i < maxRefusalKeys+100; i++ {
		r.Refused(strconv.Itoa(i), "Refused")
	}
	if n := len(r.keys); n > maxRefusalKeys+1 {
		t.Fatalf("%d records kept, want at most %d", n, maxRefusalKeys+1)
	}
	out := logs.String()
	if n := strings.Count(out, "Refused"); n != maxRefusalKeys+1 {
		t.Fatalf("%d lines, want one per kept key and one shared", n)
	}
	if strings.Count(out, "shared_with_other_sources=true") != 1 {
		t.Fatal("the shared record's line does not say it is shared")
	}
}
