// Package unix is SPIRE's "unix" workload attestor: it turns a calling
// process into unix:uid, unix:user, unix:gid, unix:group,
// unix:supplementary_gid and unix:supplementary_group selectors and, when
// asked to, unix:path and unix:sha256 of the executable.
//
// Everything is read through a /proc/<pid> directory handle that is opened
// first and then confirmed, through the caller's pidfd, to still belong to
// the caller; the executable is hashed through /proc/<pid>/exe, which is the
// file the kernel actually runs, so swapping the file at its path after exec
// changes nothing.
package unix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"

	"github.com/spiffe-hw/spire-hw/agent/peer"
)

// SelectorType is the type of every selector this attestor emits.
const SelectorType = "unix"

// Config mirrors the plugin_data of SPIRE's unix attestor.
type Config struct {
	// DiscoverWorkloadPath adds unix:path and unix:sha256 selectors
	// (discover_workload_path; default false).
	DiscoverWorkloadPath bool
	// WorkloadSizeLimit caps the size of a binary that is hashed
	// (workload_size_limit). As in SPIRE: 0 (the default) means no limit, a
	// negative value disables unix:sha256.
	WorkloadSizeLimit int64
}

// Attestor is the unix workload attestor.
type Attestor struct {
	cfg     Config
	procDir string
	// Name lookups are hooks so tests can simulate a missing passwd entry.
	lookupUser  func(uid string) (string, error)
	lookupGroup func(gid string) (string, error)
}

// New returns an Attestor with the given configuration.
func New(cfg Config) *Attestor {
	return &Attestor{
		cfg:     cfg,
		procDir: "/proc",
		lookupUser: func(uid string) (string, error) {
			u, err := user.LookupId(uid)
			if err != nil {
				return "", err
			}
			return u.Username, nil
		},
		lookupGroup: func(gid string) (string, error) {
			g, err := user.LookupGroupId(gid)
			if err != nil {
				return "", err
			}
			return g.Name, nil
		},
	}
}

// ErrTooLarge is returned (wrapped) when the executable exceeds
// WorkloadSizeLimit.
var ErrTooLarge = errors.New("unix: workload binary exceeds workload_size_limit")

// Attest returns the selectors for pid. pidfd must refer to the same process
// (pass -1 only where no pidfd exists; the PID-reuse check is then skipped).
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	// A caller that has given up gets no work done for it.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("unix: %w", err)
	}
	if pid <= 0 {
		return nil, fmt.Errorf("unix: invalid pid %d", pid)
	}
	dirfd, err := sysunix.Open(fmt.Sprintf("%s/%d", a.procDir, pid), sysunix.O_RDONLY|sysunix.O_DIRECTORY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unix: open /proc/%d: %w", pid, err)
	}
	defer sysunix.Close(dirfd)

	// The directory handle is bound to whichever process held the PID when
	// it was opened. If the caller is still alive now, that was the caller:
	// a PID is not reused before its process exits and is reaped.
	if pidfd >= 0 {
		if err := peer.CheckPIDFD(pidfd); err != nil {
			return nil, fmt.Errorf("unix: caller pid %d: %w", pid, err)
		}
	}

	status, err := readAt(dirfd, "status", 1<<20)
	if err != nil {
		return nil, fmt.Errorf("unix: read /proc/%d/status: %w", pid, err)
	}
	st, err := parseStatus(status)
	if err != nil {
		return nil, fmt.Errorf("unix: /proc/%d/status: %w", pid, err)
	}

	var sel []*types.Selector
	add := func(kind, value string) {
		sel = append(sel, &types.Selector{Type: SelectorType, Value: kind + ":" + value})
	}
	add("uid", st.uid)
	if name, err := a.lookupUser(st.uid); err == nil {
		add("user", name)
	}
	add("gid", st.gid)
	if name, err := a.lookupGroup(st.gid); err == nil {
		add("group", name)
	}
	for _, g := range st.groups {
		add("supplementary_gid", g)
		if name, err := a.lookupGroup(g); err == nil {
			add("supplementary_group", name)
		}
	}

	if a.cfg.DiscoverWorkloadPath {
		path, err := readlinkAt(dirfd, "exe")
		if err != nil {
			return nil, fmt.Errorf("unix: path of pid %d: %w", pid, err)
		}
		add("path", path)
		if a.cfg.WorkloadSizeLimit >= 0 {
			sum, err := hashExe(ctx, dirfd, a.cfg.WorkloadSizeLimit)
			if err != nil {
				return nil, fmt.Errorf("unix: sha256 of pid %d (%s): %w", pid, path, err)
			}
			add("sha256", sum)
		}
	}

	// Re-check so that nothing read above came from a successor process
	// (the dirfd protects the files; this protects against a stale answer).
	if pidfd >= 0 {
		if err := peer.CheckPIDFD(pidfd); err != nil {
			return nil, fmt.Errorf("unix: caller pid %d: %w", pid, err)
		}
	}
	return sel, nil
}

// status holds the fields SPIRE uses from /proc/<pid>/status.
type status struct {
	uid, gid string
	groups   []string
}

// parseStatus takes the effective UID and GID (the second column of the Uid
// and Gid lines), which is what SPIRE's unix attestor reports, and the
// supplementary groups. Lines are split in place and only the three wanted
// are split into fields: a status file has some sixty lines, and scanning
// each into a string of its own was most of this attestor's parsing cost.
func parseStatus(b []byte) (status, error) {
	var st status
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		key, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		switch string(key) {
		case "Uid":
			id, err := pickID(strings.Fields(string(value)))
			if err != nil {
				return status{}, fmt.Errorf("uid line: %w", err)
			}
			st.uid = id
		case "Gid":
			id, err := pickID(strings.Fields(string(value)))
			if err != nil {
				return status{}, fmt.Errorf("gid line: %w", err)
			}
			st.gid = id
		case "Groups":
			for _, f := range strings.Fields(string(value)) {
				if _, err := strconv.ParseUint(f, 10, 32); err != nil {
					return status{}, fmt.Errorf("groups line: %w", err)
				}
				st.groups = append(st.groups, f)
			}
		}
	}
	if st.uid == "" || st.gid == "" {
		return status{}, errors.New("missing Uid or Gid line")
	}
	return st, nil
}

// pickID returns the effective ID (real, effective, saved, fs): like SPIRE,
// fall back to the only value if there is just one.
func pickID(fields []string) (string, error) {
	if len(fields) == 0 {
		return "", errors.New("no IDs")
	}
	id := fields[0]
	if len(fields) > 1 {
		id = fields[1]
	}
	if _, err := strconv.ParseUint(id, 10, 32); err != nil {
		return "", err
	}
	return id, nil
}

// readAt reads at most limit bytes of the file name under dirfd. It reads
// with plain system calls into a buffer a status file fits in: an os.File
// and io.ReadAll's growing buffer cost more than the read itself.
func readAt(dirfd int, name string, limit int64) ([]byte, error) {
	fd, err := sysunix.Openat(dirfd, name, sysunix.O_RDONLY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer sysunix.Close(fd)
	buf := make([]byte, 0, min(limit, 4096))
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(limit-int64(len(buf)), int64(cap(buf)))))
		}
		n, err := sysunix.Read(fd, buf[len(buf):min(int64(cap(buf)), limit)])
		if errors.Is(err, sysunix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := sysunix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// hashExe hashes the executable through /proc/<pid>/exe.
func hashExe(ctx context.Context, dirfd int, limit int64) (string, error) {
	fd, err := sysunix.Openat(dirfd, "exe", sysunix.O_RDONLY|sysunix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open exe: %w", err)
	}
	f := os.NewFile(uintptr(fd), "exe")
	defer f.Close()
	return HashFile(ctx, f, limit)
}

// HashFile returns the hex SHA-256 of f from its current offset, the value
// of a unix:sha256 selector. limit caps the size as WorkloadSizeLimit does
// (0: no limit); a larger file gives ErrTooLarge. It stops when ctx ends.
func HashFile(ctx context.Context, f *os.File, limit int64) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat exe: %w", err)
	}
	if limit > 0 && fi.Size() > limit {
		return "", fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, fi.Size(), limit)
	}
	h := sha256.New()
	var r io.Reader = f
	if limit > 0 {
		// The file could grow after the stat.
		r = io.LimitReader(f, limit+1)
	}
	n, err := io.Copy(h, ctxReader{ctx: ctx, r: r})
	if err != nil {
		return "", fmt.Errorf("read exe: %w", err)
	}
	if limit > 0 && n > limit {
		return "", fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long hash when the caller gives up.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
