// Package exepages drops a process's mappings of its own executable's
// read-only pages (code and read-only data) once start-up is over.
//
// The kernel maps a binary's pages around each page touched (fault-around,
// 64 KiB by default), and a Go program's package initialisation touches
// code and type data in every package it links: after start-up nearly all
// of a 40 MiB binary's text and read-only data is resident and counted in
// the process's RSS, though most of it never runs again (24 of the agent's
// 30 MiB when idle, bench/RESULTS-agent-memory.md). These pages are clean
// copies of the file, so MADV_DONTNEED only removes them from the address
// space: they stay in the page cache, and the pages the process goes on
// using come back with a minor fault. What stays resident is then what the
// process runs, and the page cache can reclaim the rest without first
// unmapping it.
package exepages

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mapping is one mapping of the executable that Release considered.
type Mapping struct {
	Start, End uint64
	Perms      string
	// RSS is what was resident before the release, in bytes.
	RSS int64
	// Released says the mapping was dropped; a writable mapping, or one
	// with private (copied-on-write) pages, is kept, since dropping it
	// would lose what was written.
	Released bool
}

// Release drops the read-only mappings of the running executable and
// returns every mapping of it with what was done. An error leaves the
// mappings as they were (up to the one that failed).
func Release() ([]Mapping, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return nil, fmt.Errorf("exepages: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("exepages: %w", err)
	}
	// The path as well as the device and inode: on overlayfs (containers)
	// the maps name the underlying file's device, stat the overlay's.
	path, _ := os.Readlink("/proc/self/exe")
	maps, err := parse(smaps, exe{major: unix.Major(st.Dev), minor: unix.Minor(st.Dev), ino: st.Ino, path: path})
	if err != nil {
		return nil, err
	}
	for i := range maps {
		m := &maps[i]
		if !m.Released {
			continue
		}
		// Addresses from smaps, never Go pointers: nothing of the Go heap
		// is in the executable's read-only segments.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(m.Start), uintptr(m.End-m.Start), unix.MADV_DONTNEED); errno != 0 {
			// This one and those after it stay mapped.
			for j := i; j < len(maps); j++ {
				maps[j].Released = false
			}
			return maps, fmt.Errorf("exepages: madvise %x-%x: %w", m.Start, m.End, errno)
		}
	}
	return maps, nil
}

// exe names the executable's file.
type exe struct {
	major, minor uint32
	ino          uint64
	path         string
}

// parse reads smaps for the mappings of the file and marks those Release
// may drop: not writable, and without private pages, resident or swapped.
func parse(smaps []byte, file exe) ([]Mapping, error) {
	var (
		out        []Mapping
		cur        *Mapping
		anon, swap int64 = -1, -1
	)
	finish := func() {
		if cur != nil {
			cur.RSS <<= 10 // smaps counts in kB
			// A private page swapped out counts under Swap, not
			// Anonymous: a PIE binary's relocated read-only data is such
			// a page, and dropping it would bring back the file's bytes.
			cur.Released = !strings.Contains(cur.Perms, "w") && anon == 0 && swap == 0
			out = append(out, *cur)
		}
		cur, anon, swap = nil, -1, -1
	}
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			finish()
			m, ok := header(line, f, file)
			if ok {
				cur = &m
			}
			continue
		}
		if cur == nil || len(f) < 2 {
			continue
		}
		var dst *int64
		switch f[0] {
		case "Rss:":
			dst = &cur.RSS
		case "Anonymous:":
			dst = &anon
		case "Swap:":
			dst = &swap
		default:
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("exepages: smaps: %q: %w", line, err)
		}
		*dst = kb
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("exepages: smaps: %w", err)
	}
	finish()
	return out, nil
}

// header parses "start-end perms offset major:minor inode [path]" and
// says whether it maps the file.
func header(line string, f []string, file exe) (Mapping, bool) {
	start, end, ok := strings.Cut(f[0], "-")
	if !ok {
		return Mapping{}, false
	}
	s, err1 := strconv.ParseUint(start, 16, 64)
	e, err2 := strconv.ParseUint(end, 16, 64)
	maj, min, ok := strings.Cut(f[3], ":")
	if !ok || err1 != nil || err2 != nil || e <= s {
		return Mapping{}, false
	}
	dmaj, err3 := strconv.ParseUint(maj, 16, 32)
	dmin, err4 := strconv.ParseUint(min, 16, 32)
	in, err5 := strconv.ParseUint(f[4], 10, 64)
	sameFile := err3 == nil && err4 == nil && err5 == nil && uint32(dmaj) == file.major && uint32(dmin) == file.minor && in == file.ino
	// The path is the rest of the line after the inode, spaces and all.
	samePath := false
	if len(f) >= 6 && file.path != "" {
		rest := line
		for range 5 {
			rest = strings.TrimLeft(rest, " ")
			if i := strings.IndexByte(rest, ' '); i >= 0 {
				rest = rest[i:]
			}
		}
		samePath = strings.TrimSpace(rest) == file.path
	}
	if !sameFile && !samePath {
		return Mapping{}, false
	}
	return Mapping{Start: s, End: e, Perms: f[1]}, true
}
