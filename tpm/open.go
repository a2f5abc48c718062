package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultPath is the kernel's resource-managed TPM device.
const DefaultPath = "/dev/tpmrm0"

// maxResponse bounds a TPM response; TPM2 responses are far smaller, so a
// larger header means a broken or hostile peer.
const maxResponse = 1 << 16

// TPM is an open connection to one TPM. Its methods are safe for concurrent
// use; commands are serialized because a TPM runs one at a time.
type TPM struct {
	mu sync.Mutex
	tr transport.TPMCloser

	keysMu sync.Mutex
	keys   map[string]*ResidentKey // by PKIX DER of the public key
}

// Open opens the TPM at path: a device file such as /dev/tpmrm0,
// "tcp://host:port" for a swtpm server socket, or "unix:///path" (or the
// path of a socket) for a swtpm Unix socket. Both socket forms speak raw
// TPM 2.0 commands, as swtpm does on its --server channel.
func Open(path string) (*TPM, error) {
	if path == "" {
		path = DefaultPath
	}
	var tr transport.TPMCloser
	switch {
	case strings.HasPrefix(path, "tcp://"):
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(path, "tcp://"), 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("tpm: open %s: %w", path, err)
		}
		tr = &streamTransport{conn: c}
	case strings.HasPrefix(path, "unix://"):
		c, err := net.DialTimeout("unix", strings.TrimPrefix(path, "unix://"), 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("tpm: open %s: %w", path, err)
		}
		tr = &streamTransport{conn: c}
	default:
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("tpm: open %s: %w", path, err)
		}
		if fi.Mode()&os.ModeSocket != 0 {
			return Open("unix://" + path)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("tpm: open %s: %w", path, err)
		}
		tr = &deviceTransport{f: f}
	}
	return &TPM{tr: tr}, nil
}

// shared holds the connections handed out by Shared, by path.
var shared = struct {
	sync.Mutex
	m map[string]*sharedTPM
}{m: map[string]*sharedTPM{}}

type sharedTPM struct {
	t    *TPM
	refs int
}

// Shared returns this process's one connection to the TPM at path, opening
// it on first use; release gives it back, and the last release closes it.
// The agent's key manager and node attestor share it: a swtpm serves one
// connection at a time, and the key manager's resident keys must be found
// by the attestor that certifies them.
func Shared(path string) (t *TPM, release func(), err error) {
	if path == "" {
		path = DefaultPath
	}
	// One socket, two spellings ("/run/swtpm.sock", "unix:///run/swtpm.sock")
	// must not become two connections: a swtpm serves one at a time.
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		path = "unix://" + path
	}
	shared.Lock()
	defer shared.Unlock()
	s, ok := shared.m[path]
	if !ok {
		tp, err := Open(path)
		if err != nil {
			return nil, nil, err
		}
		s = &sharedTPM{t: tp}
		shared.m[path] = s
	}
	s.refs++
	var once sync.Once
	return s.t, func() {
		once.Do(func() {
			shared.Lock()
			defer shared.Unlock()
			if s.refs--; s.refs == 0 {
				delete(shared.m, path)
				_ = s.t.Close()
			}
		})
	}, nil
}

// Close closes the connection. Objects the caller did not flush stay
// loaded in a swtpm, so close AKs first.
func (t *TPM) Close() error {
	if err := t.tr.Close(); err != nil {
		return fmt.Errorf("tpm: close: %w", err)
	}
	return nil
}

// Send implements transport.TPM so that go-tpm commands can be executed on
// t directly; it serializes commands.
// A TPM busy with a long task (key generation, self-test) answers
// TPM_RC_RETRY, TPM_RC_YIELDED or TPM_RC_TESTING; the command is resent.
func (t *TPM) Send(cmd []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for try := 0; ; try++ {
		rsp, err := t.tr.Send(cmd)
		if err != nil || len(rsp) < 10 || try >= 20 {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case 0x922, 0x908, 0x90a: // RETRY, YIELDED, TESTING
			time.Sleep(time.Duration(try+1) * 5 * time.Millisecond)
		default:
			return rsp, nil
		}
	}
}

// deviceTransport talks to a character device, which returns a whole
// response to one read.
type deviceTransport struct{ f *os.File }

func (d *deviceTransport) Send(cmd []byte) ([]byte, error) {
	if _, err := d.f.Write(cmd); err != nil {
		return nil, err
	}
	buf := make([]byte, maxResponse)
	n, err := d.f.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (d *deviceTransport) Close() error { return d.f.Close() }

// streamTransport frames responses on a byte stream by their header's size
// field: a socket may deliver a response in several reads.
type streamTransport struct{ conn net.Conn }

func (s *streamTransport) Send(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("bad response size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[10:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

func (s *streamTransport) Close() error { return s.conn.Close() }

// flush unloads a transient object or session. Errors are dropped on
// purpose: flush runs on cleanup paths where the first error matters.
func (t *TPM) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// Handles lists the loaded transient objects; tests use it to prove that
// nothing leaks into a TPM's three object slots.
func (t *TPM) Handles() ([]uint32, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapHandles,
		Property:      uint32(tpm2.TPMHTTransient) << 24,
		PropertyCount: 64,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: get handles: %w", err)
	}
	hs, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, fmt.Errorf("tpm: get handles: %w", err)
	}
	out := make([]uint32, 0, len(hs.Handle))
	for _, h := range hs.Handle {
		out = append(out, uint32(h))
	}
	return out, nil
}

var errNoEK = errors.New("no EK certificate and no EK public key found")
