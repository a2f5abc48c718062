package wlapi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// responseMin tells the response's write from the server's SETTINGS and
// WINDOW_UPDATE frames (tens of bytes): the response carries an SVID, a key
// and a bundle, hundreds of bytes at least.
const responseMin = 200

// serverTimes collects, in the agent process, the time from a
// connection's accept to the end of the write that carried its response:
// the agent's share of a new-connection call as the agent sees it, without
// the client's work or the client's wake-up.
type serverTimes struct {
	mu sync.Mutex
	d  []time.Duration
}

func (st *serverTimes) add(d time.Duration) {
	st.mu.Lock()
	st.d = append(st.d, d)
	st.mu.Unlock()
}

// take returns what was collected since the last take.
func (st *serverTimes) take() []time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.d
	st.d = nil
	return d
}

// timedListener stamps each connection at accept.
type timedListener struct {
	net.Listener
	st *serverTimes
}

func (l timedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &timedConn{Conn: c, accepted: time.Now(), st: l.st}, nil
}

// timedConn records its first write of a response. It keeps SyscallConn,
// which the agent's peer credentials read the caller's pidfd through.
type timedConn struct {
	net.Conn
	accepted time.Time
	st       *serverTimes
	once     sync.Once
}

func (c *timedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil && len(b) >= responseMin {
		c.once.Do(func() { c.st.add(time.Since(c.accepted)) })
	}
	return n, err
}

func (c *timedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// timesLine is how the agent process hands its server times to the bench
// on SIGUSR1: one line, "times" and nanoseconds.
func timesLine(d []time.Duration) string {
	var b strings.Builder
	b.WriteString("times")
	for _, x := range d {
		fmt.Fprintf(&b, " %d", x.Nanoseconds())
	}
	b.WriteByte('\n')
	return b.String()
}

// readTimes reads lines from r until a times line, and parses it.
func readTimes(r *bufio.Reader) ([]time.Duration, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "times" {
			continue
		}
		d := make([]time.Duration, 0, len(f)-1)
		for _, s := range f[1:] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, err
			}
			d = append(d, time.Duration(n))
		}
		return d, nil
	}
}
