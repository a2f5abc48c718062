package lineage

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Key identifies a process for its whole life and names no other process
// while the machine is up.
type Key struct {
	// Ino is the inode of the process's pidfs entry: fstat(pidfd).st_ino.
	// It is zero on kernels without pidfs.
	Ino uint64
	// TGID and StartTicks (the start time in clock ticks since boot, as in
	// /proc/<pid>/stat) identify the process when Ino is zero.
	TGID       int32
	StartTicks uint64
}

// clockTicksPerSec is USER_HZ, the unit of /proc/<pid>/stat start times on
// every architecture Linux supports today.
const clockTicksPerSec = 100

// makeKey builds the key of a process from what the kernel reports about it.
func makeKey(ino uint64, tgid int32, startNS uint64) Key {
	if ino != 0 {
		return Key{Ino: ino}
	}
	return Key{TGID: tgid, StartTicks: startNS / (1e9 / clockTicksPerSec)}
}

// FileID says which version of a file a process executed: a file's contents
// cannot change without its change time (or size) changing.
type FileID struct {
	Dev       uint64 // as stat's st_dev
	Ino       uint64
	CtimeSec  int64
	CtimeNsec int64
	Size      int64
}

// Exe is the executable a process runs.
type Exe struct {
	FileID
	// Path is where the file was when the process executed it, as
	// readlink(/proc/<pid>/exe) shows it (with " (deleted)" appended when
	// the file was unlinked).
	Path string
	// Unlinked is set when the file was deleted, has no links left, or never
	// had a name (a memfd).
	Unlinked bool
}

// Known reports whether anything is known about the executable.
func (e Exe) Known() bool { return e.Path != "" }

// Ancestor is what a process knows of one of its ancestors.
type Ancestor struct {
	PID int32
	Key Key
	Exe Exe
}

// Process is one entry of the table. Values returned by the table are
// copies; Ancestors is shared and must not be modified.
type Process struct {
	Key    Key
	PID    int32 // thread-group ID
	PPID   int32 // the parent's thread-group ID when the process was forked
	Parent Key
	// StartNS is the start time in nanoseconds since boot (tick precision
	// for processes read from /proc).
	StartNS              uint64
	UID, GID, EUID, EGID uint32
	CgroupID             uint64
	Comm                 string
	Exe                  Exe
	// Ancestors starts with the parent; it was copied when the process
	// executed its program, so it stays valid after the ancestors exit.
	Ancestors []Ancestor
	// Exited is set once the whole thread group has exited.
	Exited bool
	// FromProc is set for processes read from /proc rather than traced.
	FromProc bool
}

// asAncestor is what descendants keep of p.
func (p *Process) asAncestor() Ancestor {
	return Ancestor{PID: p.PID, Key: p.Key, Exe: p.Exe}
}

// kernelDev converts the kernel's internal dev_t (major << 20 | minor) to
// the encoding stat returns.
func kernelDev(d uint64) uint64 {
	return unix.Mkdev(uint32(d>>20), uint32(d&(1<<20-1)))
}

// deletedSuffix is what d_path appends to the path of an unlinked file.
const deletedSuffix = " (deleted)"

// trimDeleted returns the path without the suffix d_path adds.
func trimDeleted(p string) (string, bool) {
	return strings.CutSuffix(p, deletedSuffix)
}
