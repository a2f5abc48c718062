package tpmkey

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// tracer is a proxy between a TPM client and swtpm's Unix socket that
// times each command by its command code, from the moment the whole
// command is forwarded to swtpm to the moment its whole response is back.
// It lets the benchmark see where a resident signature goes with the real
// tpm.ResidentKey code, not a replica of its command sequence. The proxy's
// own hop is outside the timed span, so the per-command times are swtpm's
// (processing plus one socket round trip).
type tracer struct {
	// Path is what tpm.Open takes to talk through the proxy.
	Path string

	mu    sync.Mutex
	spent map[uint32]time.Duration
	count map[uint32]int
}

// ccNames names the command codes a resident key sends.
var ccNames = map[uint32]string{
	0x131: "CreatePrimary", 0x153: "Create", 0x157: "Load", 0x161: "ContextLoad",
	0x162: "ContextSave", 0x15d: "Sign", 0x165: "FlushContext", 0x148: "Certify",
	0x17a: "GetCapability",
}

func ccName(cc uint32) string {
	if n, ok := ccNames[cc]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", cc)
}

// startTracer proxies one client connection at a time to the swtpm at
// upstream ("unix:///path").
func startTracer(tb testing.TB, upstream string) *tracer {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "trace.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	tr := &tracer{Path: "unix://" + sock, spent: map[uint32]time.Duration{}, count: map[uint32]int{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", strings.TrimPrefix(upstream, "unix://"))
			if err != nil {
				c.Close()
				continue
			}
			tr.serve(c, up) // one at a time, as swtpm serves its clients
		}
	}()
	return tr
}

func (tr *tracer) serve(c, up net.Conn) {
	defer c.Close()
	defer up.Close()
	for {
		cmd, err := readFrame(c)
		if err != nil {
			return
		}
		cc := binary.BigEndian.Uint32(cmd[6:10])
		t0 := time.Now()
		if _, err := up.Write(cmd); err != nil {
			return
		}
		rsp, err := readFrame(up)
		if err != nil {
			return
		}
		d := time.Since(t0)
		tr.mu.Lock()
		tr.spent[cc] += d
		tr.count[cc]++
		tr.mu.Unlock()
		if _, err := c.Write(rsp); err != nil {
			return
		}
	}
}

// readFrame reads one TPM command or response, framed by its header's
// size field.
func readFrame(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, fmt.Errorf("bad TPM frame size %d", size)
	}
	b := make([]byte, size)
	copy(b, hdr)
	_, err := io.ReadFull(r, b[10:])
	return b, err
}

// reset forgets what was recorded so far.
func (tr *tracer) reset() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	clear(tr.spent)
	clear(tr.count)
}

// cmdTime is one command code's share of the traced work.
type cmdTime struct {
	name  string
	calls int
	total time.Duration
}

// snapshot lists the recorded commands, most time first.
func (tr *tracer) snapshot() []cmdTime {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []cmdTime
	for cc, d := range tr.spent {
		out = append(out, cmdTime{name: ccName(cc), calls: tr.count[cc], total: d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].total > out[j].total })
	return out
}
