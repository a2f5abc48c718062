package lineage

import (
	"encoding/binary"
	"strings"
	"testing"
)

// record builds a ring-buffer record as the BPF program lays it out.
func record(typ, flags uint32, path string) []byte {
	b := make([]byte, eventSize+len(path))
	le := binary.NativeEndian
	le.PutUint32(b[0:], typ)
	le.PutUint32(b[4:], flags)
	le.PutUint32(b[8:], 42)
	le.PutUint64(b[16:], 7)
	le.PutUint64(b[72:], 254<<20|3)
	le.PutUint32(b[100:], uint32(len(path)))
	copy(b[112:], "comm")
	copy(b[eventSize:], path)
	return b
}

func TestDecodeEvent(t *testing.T) {
	ev, err := decodeEvent(record(eventExec, flagExeUnhashed, "/usr/bin/x"))
	if err != nil {
		t.Fatal(err)
	}
	p := ev.proc
	if p.Key != (Key{Ino: 7}) || p.PID != 42 || p.Comm != "comm" || p.Exe.Path != "/usr/bin/x (deleted)" || !p.Exe.Unlinked {
		t.Fatalf("%+v", p)
	}
	if p.Exe.Dev != 0xfe03 {
		t.Fatalf("dev %#x, want stat's encoding of 254:3", p.Exe.Dev)
	}
	for name, b := range map[string][]byte{
		"short":        record(eventFork, 0, "")[:eventSize-1],
		"path overrun": record(eventExec, 0, "/x")[:eventSize+1],
		"relative":     record(eventExec, 0, "x"),
		"unknown type": record(99, 0, ""),
	} {
		if _, err := decodeEvent(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(record(eventExec, 0, "/usr/bin/sleep"))
	f.Add(record(eventFork, 0, ""))
	f.Add(record(eventExec, flagExePseudo, "/memfd:x"))
	f.Add(record(eventExit, 0, ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b)
		if err != nil {
			return
		}
		if ev.typ == eventExec && ev.flags&flagNoExe == 0 && !strings.HasPrefix(ev.proc.Exe.Path, "/") {
			t.Fatalf("accepted exec path %q", ev.proc.Exe.Path)
		}
	})
}
