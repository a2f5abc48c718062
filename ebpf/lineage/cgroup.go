package lineage

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CgroupPaths turns cgroup v2 IDs into paths below the cgroup2 mount, such
// as "/system.slice/foo.service". A cgroup's ID is its directory's inode
// number and is never reused while the machine is up, so a path once found
// stays right for as long as the cgroup lives.
type CgroupPaths struct {
	root string

	mu       sync.Mutex
	paths    map[uint64]string
	lastScan time.Time
}

// minRescan keeps a caller that names unknown cgroup IDs from making the
// agent walk the hierarchy continuously.
const minRescan = 100 * time.Millisecond

// NewCgroupPaths finds the cgroup2 mount.
func NewCgroupPaths() (*CgroupPaths, error) {
	root, err := cgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return &CgroupPaths{root: root, paths: make(map[uint64]string)}, nil
}

// Path returns the path of the cgroup with the given ID.
func (c *CgroupPaths) Path(id uint64) (string, bool) {
	if id == 0 {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.paths[id]; ok {
		return p, true
	}
	if time.Since(c.lastScan) < minRescan {
		return "", false
	}
	c.scanLocked()
	p, ok := c.paths[id]
	return p, ok
}

func (c *CgroupPaths) scanLocked() {
	c.lastScan = time.Now()
	if len(c.paths) > 1<<16 {
		clear(c.paths)
	}
	_ = filepath.WalkDir(c.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(path, c.root), "/")
		c.paths[st.Ino] = rel
		return nil
	})
}

// cgroup2Mount returns the mount point of the cgroup2 file system.
func cgroup2Mount(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("lineage: find cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options... - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fields := strings.Fields(post); len(fields) == 0 || fields[0] != "cgroup2" {
			continue
		}
		if fields := strings.Fields(pre); len(fields) >= 5 {
			return unescapeMount(fields[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("lineage: read %s: %w", mountinfo, err)
	}
	return "", fmt.Errorf("lineage: no cgroup2 file system is mounted")
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline and
// backslash.
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// SystemdUnit returns the systemd unit a cgroup path belongs to: the deepest
// component naming a service or a scope, the only units that hold
// processes.
func SystemdUnit(cgroupPath string) (string, bool) {
	parts := strings.Split(cgroupPath, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if p := parts[i]; strings.HasSuffix(p, ".service") || strings.HasSuffix(p, ".scope") {
			return p, true
		}
	}
	return "", false
}
