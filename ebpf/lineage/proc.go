package lineage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrExited is returned when the process behind a pidfd has exited, so that
// what was read about its PID may describe another process.
var ErrExited = errors.New("lineage: process has exited")

// pidfsMagic is PIDFS_MAGIC, the f_type of the pidfs file system.
const pidfsMagic = 0x50494446

var (
	pidfsOnce sync.Once
	pidfsOK   bool
)

// havePidfs reports whether pidfds are pidfs files with per-process
// inodes, probing once with a pidfd of our own process.
func havePidfs() bool {
	pidfsOnce.Do(func() {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		var st unix.Statfs_t
		pidfsOK = unix.Fstatfs(fd, &st) == nil && uint32(st.Type) == pidfsMagic
	})
	return pidfsOK
}

// KeyOf returns the key of the process behind pidfd. With pidfs this is one
// fstat; without it, the PID comes from the pidfd's fdinfo and the start
// time from /proc, and the pidfd is checked alive afterwards.
func KeyOf(pidfd int) (Key, error) {
	if havePidfs() {
		var st unix.Stat_t
		if err := unix.Fstat(pidfd, &st); err != nil {
			return Key{}, fmt.Errorf("lineage: fstat pidfd: %w", err)
		}
		return Key{Ino: st.Ino}, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return Key{}, fmt.Errorf("lineage: pidfd fdinfo: %w", err)
	}
	var pid int64 = -1
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		}
	}
	if pid <= 0 {
		return Key{}, fmt.Errorf("lineage: pidfd fdinfo: %w", ErrExited)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Key{}, fmt.Errorf("lineage: read /proc/%d/stat: %w", pid, err)
	}
	s, err := parseStat(st)
	if err != nil {
		return Key{}, fmt.Errorf("lineage: /proc/%d/stat: %w", pid, err)
	}
	if err := CheckAlive(pidfd); err != nil {
		return Key{}, err
	}
	return Key{TGID: int32(pid), StartTicks: s.startTicks}, nil
}

// CheckAlive returns ErrExited once the process behind pidfd has exited: a
// pidfd turns readable then, before the PID can be reused.
func CheckAlive(pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("lineage: poll pidfd: %w", err)
		}
		if n > 0 {
			if fds[0].Revents&unix.POLLNVAL != 0 {
				return fmt.Errorf("lineage: poll pidfd: %w", unix.EBADF)
			}
			if fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0 {
				return ErrExited
			}
		}
		return nil
	}
}

// statFields are the fields used from /proc/<pid>/stat.
type statFields struct {
	comm       string
	ppid       int32
	flags      uint64
	startTicks uint64
}

// parseStat parses /proc/<pid>/stat. The command name sits in parentheses
// and may itself contain spaces and parentheses, so fields are counted from
// the last ')'.
func parseStat(b []byte) (statFields, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return statFields{}, errors.New("no command name")
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return statFields{}, fmt.Errorf("%d fields after the command name", len(f))
	}
	ppid, err := strconv.ParseInt(f[1], 10, 32)
	if err != nil {
		return statFields{}, fmt.Errorf("ppid: %w", err)
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return statFields{}, fmt.Errorf("flags: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return statFields{}, fmt.Errorf("starttime: %w", err)
	}
	return statFields{comm: string(b[open+1 : end]), ppid: int32(ppid), flags: flags, startTicks: start}, nil
}

// parseIDs reads the real and effective IDs from the Uid and Gid lines of
// /proc/<pid>/status.
func parseIDs(b []byte) (uid, euid, gid, egid uint32, err error) {
	var haveUID, haveGID bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "Uid" && key != "Gid") {
			continue
		}
		f := strings.Fields(value)
		if len(f) < 2 {
			return 0, 0, 0, 0, fmt.Errorf("%s line has %d IDs", key, len(f))
		}
		r, err1 := strconv.ParseUint(f[0], 10, 32)
		e, err2 := strconv.ParseUint(f[1], 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("%s line: %w", key, err)
		}
		if key == "Uid" {
			uid, euid, haveUID = uint32(r), uint32(e), true
		} else {
			gid, egid, haveGID = uint32(r), uint32(e), true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, 0, err
	}
	if !haveUID || !haveGID {
		return 0, 0, 0, 0, errors.New("missing Uid or Gid line")
	}
	return uid, euid, gid, egid, nil
}

// parseCgroup returns the cgroup v2 path from /proc/<pid>/cgroup.
func parseCgroup(b []byte) (string, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, true
		}
	}
	return "", false
}

var (
	cgroupRootOnce sync.Once
	cgroupRoot     string
)

// cgroupID returns the ID of the cgroup at path (relative to the cgroup2
// mount): its directory's inode number.
func cgroupID(path string) uint64 {
	cgroupRootOnce.Do(func() { cgroupRoot, _ = cgroup2Mount("/proc/self/mountinfo") })
	if cgroupRoot == "" {
		return 0
	}
	var st unix.Stat_t
	if unix.Stat(cgroupRoot+path, &st) != nil {
		return 0
	}
	return st.Ino
}

const pfKthread = 0x00200000

// errKernelThread is returned by ReadProc for kernel threads, which run no
// program.
var errKernelThread = errors.New("lineage: kernel thread")

// ReadProc reads what the tracer would have reported about process pid from
// /proc. pidfd must be a pidfd of pid: every file is read through a handle on
// /proc/<pid> that is confirmed, through the pidfd, to belong to that very
// process. Ancestors are left empty.
func ReadProc(pid int32, pidfd int) (Process, error) {
	key, err := KeyOf(pidfd)
	if err != nil {
		return Process{}, err
	}
	dirfd, err := unix.Open(fmt.Sprintf("/proc/%d", pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Process{}, fmt.Errorf("lineage: open /proc/%d: %w", pid, err)
	}
	defer unix.Close(dirfd)
	if err := CheckAlive(pidfd); err != nil {
		return Process{}, err
	}
	b, err := readAt(dirfd, "stat")
	if err != nil {
		return Process{}, fmt.Errorf("lineage: read /proc/%d/stat: %w", pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return Process{}, fmt.Errorf("lineage: /proc/%d/stat: %w", pid, err)
	}
	if st.flags&pfKthread != 0 {
		return Process{}, errKernelThread
	}
	if key.Ino == 0 {
		key = Key{TGID: pid, StartTicks: st.startTicks}
	}
	p := Process{
		Key:      key,
		PID:      pid,
		PPID:     st.ppid,
		StartNS:  st.startTicks * (1e9 / clockTicksPerSec),
		Comm:     st.comm,
		FromProc: true,
	}
	if b, err = readAt(dirfd, "status"); err != nil {
		return Process{}, fmt.Errorf("lineage: read /proc/%d/status: %w", pid, err)
	}
	if p.UID, p.EUID, p.GID, p.EGID, err = parseIDs(b); err != nil {
		return Process{}, fmt.Errorf("lineage: /proc/%d/status: %w", pid, err)
	}
	if b, err = readAt(dirfd, "cgroup"); err == nil {
		if path, ok := parseCgroup(b); ok {
			p.CgroupID = cgroupID(path)
		}
	}
	if p.Exe, err = readExe(dirfd); err != nil {
		return Process{}, fmt.Errorf("lineage: /proc/%d/exe: %w", pid, err)
	}
	if err := CheckAlive(pidfd); err != nil {
		return Process{}, err
	}
	return p, nil
}

// readExe describes the file /proc/<pid>/exe refers to: the file the
// process executed, wherever its path now points.
func readExe(dirfd int) (Exe, error) {
	buf := make([]byte, maxPath)
	n, err := unix.Readlinkat(dirfd, "exe", buf)
	if err != nil {
		return Exe{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, "exe", &st, 0); err != nil {
		return Exe{}, err
	}
	path := string(buf[:n])
	_, deleted := trimDeleted(path)
	return Exe{
		FileID:   FileIDOf(&st),
		Path:     path,
		Unlinked: deleted || st.Nlink == 0,
	}, nil
}

// FileIDOf returns the identity of a file from its stat.
func FileIDOf(st *unix.Stat_t) FileID {
	return FileID{
		Dev:       st.Dev,
		Ino:       st.Ino,
		CtimeSec:  st.Ctim.Sec,
		CtimeNsec: st.Ctim.Nsec,
		Size:      st.Size,
	}
}

func readAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// ReadLineage is ReadProc plus the process's current ancestors, read from
// /proc up to maxDepth levels. It is the fallback when the tracer cannot
// run: unlike the tracer's chains, it sees orphans as children of whoever
// adopted them.
func ReadLineage(pid int32, pidfd int, maxDepth int) (Process, error) {
	p, err := ReadProc(pid, pidfd)
	if err != nil {
		return Process{}, err
	}
	child := p
	for range maxDepth {
		if child.PPID <= 0 {
			break
		}
		parent, ok := readParent(child)
		if !ok {
			break
		}
		if len(p.Ancestors) == 0 {
			p.Parent = parent.Key
		}
		p.Ancestors = append(p.Ancestors, parent.asAncestor())
		child = parent
	}
	return p, nil
}

// readParent reads child's parent, making sure the PID still names it: the
// parent is opened first, then the child is confirmed to still have it as
// parent (an orphan is re-parented before its parent's PID can be reused).
func readParent(child Process) (Process, bool) {
	pfd, err := unix.PidfdOpen(int(child.PPID), 0)
	if err != nil {
		return Process{}, false
	}
	defer unix.Close(pfd)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child.PID))
	if err != nil {
		return Process{}, false
	}
	if st, err := parseStat(b); err != nil || st.ppid != child.PPID {
		return Process{}, false
	}
	parent, err := ReadProc(child.PPID, pfd)
	if err != nil {
		return Process{}, false
	}
	return parent, true
}

// snapshotProc reads every user process in /proc.
func snapshotProc() ([]Process, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("lineage: open /proc: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("lineage: list /proc: %w", err)
	}
	var out []Process
	for _, n := range names {
		pid, err := strconv.ParseInt(n, 10, 32)
		if err != nil || pid <= 0 {
			continue
		}
		fd, err := unix.PidfdOpen(int(pid), 0)
		if err != nil {
			continue
		}
		p, err := ReadProc(int32(pid), fd)
		unix.Close(fd)
		if err != nil {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// ReadGroups returns the supplementary group IDs of process pid from the
// Groups line of /proc/<pid>/status, using buf (4 KiB is plenty) to read
// it. The file is opened by PID: the caller must check the process's pidfd
// alive afterwards, which proves the PID still named it when the file was
// opened.
func ReadGroups(pid int32, buf []byte) ([]uint32, error) {
	var name [32]byte
	path := strconv.AppendInt(append(name[:0], "/proc/"...), int64(pid), 10)
	path = append(path, "/status"...)
	fd, err := unix.Open(string(path), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lineage: open /proc/%d/status: %w", pid, err)
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lineage: read /proc/%d/status: %w", pid, err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	groups, err := parseGroups(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("lineage: /proc/%d/status: %w", pid, err)
	}
	return groups, nil
}

// parseGroups finds the Groups line of /proc/<pid>/status ("Groups:\t4 27 \n")
// and parses its IDs.
func parseGroups(b []byte) ([]uint32, error) {
	i := bytes.Index(b, []byte("\nGroups:"))
	if i < 0 {
		return nil, errors.New("no Groups line")
	}
	line := b[i+len("\nGroups:"):]
	end := bytes.IndexByte(line, '\n')
	if end < 0 {
		return nil, errors.New("groups line cut short")
	}
	line = line[:end]
	var out []uint32
	for len(line) > 0 {
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 {
			break
		}
		j := bytes.IndexAny(line, " \t")
		if j < 0 {
			j = len(line)
		}
		v, err := strconv.ParseUint(string(line[:j]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("groups line: %w", err)
		}
		out = append(out, uint32(v))
		line = line[j:]
	}
	return out, nil
}
