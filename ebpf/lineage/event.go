package lineage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Event types and flags, as in bpf/lineage.bpf.c.
const (
	eventFork   = 1
	eventExec   = 2
	eventExit   = 3
	eventCgroup = 5

	flagExeUnhashed   = 1 << 0
	flagExePseudo     = 1 << 1
	flagPathTruncated = 1 << 2
	flagNoExe         = 1 << 3
	flagExeNoLink     = 1 << 4

	// eventSize is sizeof(struct event); an exec record carries path_len
	// more bytes.
	eventSize = 128
	// maxPath is PATH_MAX_LEN in the BPF program.
	maxPath = 4096
)

// event is a decoded ring-buffer record.
type event struct {
	typ   uint32
	flags uint32
	proc  Process
}

var errShortRecord = errors.New("lineage: short ring-buffer record")

// decodeEvent parses one ring-buffer record. The layout is struct event in
// bpf/lineage.bpf.c, in the machine's byte order.
func decodeEvent(b []byte) (event, error) {
	if len(b) < eventSize {
		return event{}, fmt.Errorf("%w: %d bytes", errShortRecord, len(b))
	}
	le := binary.NativeEndian
	u32 := func(off int) uint32 { return le.Uint32(b[off:]) }
	u64 := func(off int) uint64 { return le.Uint64(b[off:]) }
	ev := event{typ: u32(0), flags: u32(4)}
	tgid, ptgid := int32(u32(8)), int32(u32(12))
	ino, pino := u64(16), u64(24)
	start, pstart := u64(32), u64(40)
	p := &ev.proc
	p.PID, p.PPID = tgid, ptgid
	p.Key = makeKey(ino, tgid, start)
	p.Parent = makeKey(pino, ptgid, pstart)
	p.StartNS = start
	p.CgroupID = u64(48)
	p.UID, p.GID, p.EUID, p.EGID = u32(56), u32(60), u32(64), u32(68)
	comm := b[112:128]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	p.Comm = string(comm)

	switch ev.typ {
	case eventFork, eventExit, eventCgroup:
		return ev, nil
	case eventExec:
	default:
		return event{}, fmt.Errorf("lineage: unknown event type %d", ev.typ)
	}
	if ev.flags&flagNoExe != 0 {
		return ev, nil
	}
	pathLen := int(u32(100))
	if pathLen > maxPath || len(b) < eventSize+pathLen {
		return event{}, fmt.Errorf("%w: path of %d bytes in a %d-byte record", errShortRecord, pathLen, len(b))
	}
	path := string(b[eventSize : eventSize+pathLen])
	if path == "" || path[0] != '/' {
		return event{}, fmt.Errorf("lineage: exec path %q is not absolute", path)
	}
	if ev.flags&(flagExeUnhashed|flagExePseudo) != 0 {
		path += deletedSuffix
	}
	p.Exe = Exe{
		FileID: FileID{
			Dev:       kernelDev(u64(72)),
			Ino:       u64(80),
			CtimeSec:  int64(u64(88)),
			CtimeNsec: int64(u32(96)),
			Size:      int64(u64(104)),
		},
		Path:     path,
		Unlinked: ev.flags&(flagExeUnhashed|flagExePseudo|flagExeNoLink) != 0,
	}
	return ev, nil
}
